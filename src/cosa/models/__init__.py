"""Networks: a timm backbone, the two classifiers and the LargeFOV decoder."""

from cosa.models.network import CoSANet, NetworkOutput, build_network

__all__ = ["CoSANet", "NetworkOutput", "build_network"]
