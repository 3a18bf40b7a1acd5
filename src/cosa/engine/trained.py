"""A trained network from a checkpoint: its config, classes and thresholds, on a device, and the
check that a dataset has the classes it was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cosa.config.load import config_from_dict
from cosa.config.schema import Config
from cosa.data.layouts import DatasetSplit, load_split
from cosa.engine import NETWORKS
from cosa.engine.checkpoint import load_checkpoint
from cosa.engine.official import load_official, official_to_cosa
from cosa.errors import CosaError
from cosa.method.thresholds import CplThresholds
from cosa.models.network import CoSANet, build_network


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


def split_for(model: TrainedModel, checkpoint: str | Path, data: str | Path | None, split: str) -> DatasetSplit:
    """``split`` of ``data``, or of the dataset the checkpoint was trained on, with the model's classes."""
    root = data or model.cfg.data.root
    if root is None:
        raise CosaError(f"{checkpoint}: its config names no dataset; pass --data ROOT")
    if data is None and not Path(root).is_dir():
        raise CosaError(f"{root}: the dataset of {checkpoint} is not there; if it moved, pass --data NEW_PATH")
    dataset = load_split(root, split)
    require_same_classes(model, dataset, checkpoint)
    return dataset


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


def state_mismatch(expected: dict, found: dict) -> str:
    """What keeps ``found`` from loading where ``expected`` is, in one line ("" when it fits): torch's
    own message spans a line per key."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [
        f"{key} is {tuple(found[key].shape)}, not {tuple(value.shape)}"
        for key, value in expected.items()
        if key in found and hasattr(found[key], "shape") and found[key].shape != value.shape
    ]
    parts = [
        f"{len(keys)} {'key' if len(keys) == 1 else 'keys'} {what} (first: {keys[0]})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
        if keys
    ]
    return "; ".join(parts)


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
    if mismatch := state_mismatch(network.state_dict(), payload[which]):
        raise CosaError(f"{path}: the {which} weights do not fit the network of its config ({mismatch})")
    network.load_state_dict(payload[which])
    thresholds = CplThresholds.from_config(cfg.method)
    thresholds.load_state_dict(payload["thresholds"])
    return TrainedModel(network.to(device).eval(), cfg, class_names, thresholds, int(payload["iteration"]))
