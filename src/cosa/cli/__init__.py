"""The ``cosa`` command line. Sub-command modules import the heavy libraries only when they run,
so that ``cosa --help`` answers at once."""

NETWORKS = ("assignment", "online")
