"""Model features looked up by entity id (SPEC 5): key layout, local cache, circuit breaker."""
