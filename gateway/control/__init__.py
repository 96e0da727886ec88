"""The desired state every worker and replica follows (SPEC 11): runtime routing and
load/unload changes, one record per model with a generation number, kept in one place
(a file the workers of one gateway share, or Redis with ``--control-url``)."""
