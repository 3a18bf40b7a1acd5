"""A trained network from a checkpoint: its config, classes and thresholds, on a device, and the
check that a dataset has the classes it was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cosa.config.load import config_from_dict
from cosa.config.schema import Config
from cosa.data.layouts import DatasetSplit
from cosa.engine import NETWORKS
from cosa.engine.checkpoint import load_checkpoint
from cosa.errors import CosaError
from cosa.method.thresholds import CplThresholds
from cosa.models.network import CoSANet, build_network
from cosa.models.official import load_official, official_to_cosa


@dataclass
class TrainedModel:
    network: CoSANet
    cfg: Config
    class_names: tuple[str, ...]
    thresholds: CplThresholds
    iteration: int


def read_checkpoint(path: str | Path) -> dict:
    """The payload of a cosa checkpoint, or of an official CoSA file converted on the fly.

    Both are read with ``weights_only=True``. A file in neither layout keeps the cosa
    checkpoint's error, since that is what the commands ask for.
    """
    try:
        return load_checkpoint(path)
    except CosaError as not_cosa:
        try:
            official = load_official(path)
        except CosaError:
            raise not_cosa from None
    return official_to_cosa(official, str(path))


def require_same_classes(model: TrainedModel, split: DatasetSplit, checkpoint: str | Path) -> None:
    """Refuse a dataset whose classes are not the model's: its label k would mean another class."""
    if split.class_names == model.class_names:
        return
    trained, data = len(model.class_names), split.num_classes
    if trained != data:
        raise CosaError(f"{checkpoint}: the model has {trained} classes but {split.root} has {data}")
    pairs = enumerate(zip(model.class_names, split.class_names), start=1)
    label, ours, theirs = next((index, ours, theirs) for index, (ours, theirs) in pairs if ours != theirs)
    raise CosaError(f"{checkpoint}: label {label} is '{ours}' for the model but '{theirs}' in {split.root}")


def load_trained(path: str | Path, device: torch.device, which: str = "assignment") -> TrainedModel:
    """A network of a cosa checkpoint (or an official CoSA file), in eval mode on ``device``."""
    if which not in NETWORKS:
        raise CosaError(f"--network must be one of {', '.join(NETWORKS)}")
    payload = read_checkpoint(path)
    missing = [key for key in ("config", "class_names", "iteration", "thresholds", which) if key not in payload]
    if missing:
        raise CosaError(f"{path}: checkpoint lacks the entries {', '.join(missing)}")
    cfg = config_from_dict(payload["config"], f"{path} (config)")
    class_names = tuple(payload["class_names"])
    network = build_network(cfg.model, len(class_names), pretrained=False)
    try:
        network.load_state_dict(payload[which])
    except RuntimeError as error:
        raise CosaError(
            f"{path}: weights do not fit the network of its config ({str(error).splitlines()[0]})"
        ) from None
    thresholds = CplThresholds.from_config(cfg.method)
    thresholds.load_state_dict(payload["thresholds"])
    return TrainedModel(network.to(device).eval(), cfg, class_names, thresholds, int(payload["iteration"]))
