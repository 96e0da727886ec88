"""Progressive delivery (SPEC 13): a rollout's plan, the gates that judge each step, and
the state machine that moves a canary through shadow, steps, promotion or rollback."""
