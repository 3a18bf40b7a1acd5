"""cosa: weakly supervised semantic segmentation with CoSA (ECCV 2024)."""

__version__ = "0.1.0"
