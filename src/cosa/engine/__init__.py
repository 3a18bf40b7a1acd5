"""Training loop, evaluation, checkpoints and process groups."""

# The two networks a checkpoint holds; the commands that load one take ``--network``.
NETWORKS = ("assignment", "online")
