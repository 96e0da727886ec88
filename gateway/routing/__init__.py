"""Traffic routing between the versions of a model: A/B weights, sticky keys, shadows."""
