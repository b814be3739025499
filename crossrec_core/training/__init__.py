"""Fitting models: the training loop, blend tuning, the fusion fit, background jobs, DDP."""
