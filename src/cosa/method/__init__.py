"""The CoSA method: assignments, pseudo-labels, losses and the training objective."""
