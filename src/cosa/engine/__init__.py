"""Training loop, evaluation, checkpoints and process groups."""
