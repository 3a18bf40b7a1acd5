"""Datasets, the two-view training pipeline and the synthetic demo data."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# The smallest side of a synthetic image: smaller scenes cannot hold their shapes.
SYNTHETIC_MIN_SIZE = 32
