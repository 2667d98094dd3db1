"""Training engine: loop, validation, checkpoints, resume and DDP."""
