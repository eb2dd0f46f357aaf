"""Training plumbing shared by every stage: mesh and sharding, checkpoints, the loop."""
