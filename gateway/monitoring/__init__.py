"""Drift monitoring (SPEC 12): reference profiles of a version's inputs and outputs,
the live traffic binned the same way, and the PSI between the two."""
