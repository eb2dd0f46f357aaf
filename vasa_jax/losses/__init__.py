"""Loss terms of the learned stages (pure functions)."""
