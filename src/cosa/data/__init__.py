"""Datasets, the two-view training pipeline and the synthetic demo data."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
