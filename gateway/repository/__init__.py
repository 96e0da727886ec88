"""What exists on disk (layout, spec) and what is loaded and serving (registry)."""
