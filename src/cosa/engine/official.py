"""Importing the authors' released CoSA checkpoints.

An official file is a dict whose ``model`` entry is the released network's state dict:
``encoder.*`` (timm ViT names, plus an unused ``encoder.head.*``), ``classifier.weight``,
``aux_classifier.weight`` and ``decoder.conv6/7/8.weight`` (LargeFOV without biases).
The released training code (``save_best``) writes beside it ``s_or_t`` (``'s'``: the online
network, ``'t'``: the assignment network), ``epoch`` (the iteration count), ``result`` (the best
validation mIoU, a float or a ``numpy.float64``) and ``args``, the ``argparse.Namespace`` of the
run: strings, numbers, lists, tuples, None and ``pathlib.PosixPath`` values, among them
``backbone``, ``aux_layer`` and ``num_classes`` (background included). Reading such a file takes
:data:`OFFICIAL_GLOBALS` and nothing more; ``args`` supplies the backbone and auxiliary layer.
:class:`~cosa.models.network.CoSANet` uses the same module names and the same ViT (qkv bias,
LayerNorm eps 1e-6, the 14×14 positional grid resampled bicubically, align_corners=False, no
antialias), so converting is checking names and shapes rather than rewriting tensors. What the
conversion adds is the rest of a cosa checkpoint — config, class names, CPL thresholds — so that
every command that reads checkpoints reads the result.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from cosa.config.load import load_config
from cosa.config.schema import ModelConfig
from cosa.data.classes import COCO_CLASSES, VOC_CLASSES
from cosa.engine.checkpoint import CHECKPOINT_FORMAT, read_torch_file
from cosa.errors import CosaError
from cosa.method.thresholds import CplThresholds
from cosa.models.network import build_network

PRESET_BY_CLASSES = {20: "voc", 80: "coco"}
CLASS_NAMES_BY_COUNT = {20: VOC_CLASSES, 80: COCO_CLASSES}
# The released files are ViT-B/16; the encoder width picks the timm ViT/16, so that models the
# official code trained on a smaller ViT convert too.
VIT_BY_WIDTH = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: ModelConfig().backbone}
# The ViT's ImageNet classification head: saved in the released files, never used by CoSA.
UNUSED_PREFIX = "encoder.head."
NETWORK_BY_S_OR_T = {"s": "online", "t": "assignment"}

# numpy's scalar reconstructor, taken from a pickle so as not to import the module that holds it
# (numpy.core under numpy 1.x, numpy._core under 2.x; importing numpy.core warns under 2.x).
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]
# What save_best pickles besides tensors and plain containers: the run's Namespace, its PosixPath
# output_dir, and a numpy.float64 mIoU. Names are given where the class's own module may differ
# from the file's (numpy 1.x vs 2.x, Python 3.13's pathlib._local).
OFFICIAL_GLOBALS = (
    argparse.Namespace,
    pathlib.PosixPath,
    (pathlib.PosixPath, "pathlib.PosixPath"),
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),
    (_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),
    np.dtype,
    type(np.dtype(np.float64)),  # numpy.dtypes.Float64DType: the pickled dtype's state is set on it
)


def is_official_checkpoint(payload: Any) -> bool:
    """True for a dict (not a cosa checkpoint) whose ``model`` entry is a state dict with ``encoder.*`` keys."""
    if not isinstance(payload, dict) or payload.get("format") == CHECKPOINT_FORMAT:
        return False
    model = payload.get("model")
    return isinstance(model, dict) and any(isinstance(key, str) and key.startswith("encoder.") for key in model)


def load_official(path: str | Path) -> dict:
    """The raw contents of an official file, read with ``weights_only=True`` and :data:`OFFICIAL_GLOBALS`."""
    payload = read_torch_file(path, OFFICIAL_GLOBALS)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        raise CosaError(
            f"{path}: is a cosa checkpoint already; evaluate, predict and export-pseudo-labels read it as it is"
        )
    if not is_official_checkpoint(payload):
        raise CosaError(
            f"{path}: not an official CoSA checkpoint (expected a dict whose 'model' entry is a "
            "state dict of encoder.*, classifier, aux_classifier and decoder tensors)"
        )
    return payload


def convert_official(
    path: str | Path,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
) -> dict:
    """A cosa checkpoint payload (what the trainer writes) from the official file at ``path``.

    The preset follows the class count (20 → ``voc``, 80 → ``coco``) unless ``preset`` is given;
    ``overrides`` are ``key=value`` config overrides; ``class_names`` are needed for other counts.
    """
    return official_to_cosa(load_official(path), str(path), preset, overrides, class_names)


def official_to_cosa(
    payload: dict,
    source: str,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    class_names: Sequence[str] | None = None,
) -> dict:
    """:func:`convert_official` of a file already read by :func:`load_official`.

    The payload's ``official`` entry records which network the file holds (``online``,
    ``assignment`` or None when it does not say), its ``result`` and its iteration.
    """
    state = {key: value for key, value in payload["model"].items() if not key.startswith(UNUSED_PREFIX)}
    num_classes = _num_classes(state, source)
    preset = preset or _preset(num_classes, source)
    names = _class_names(num_classes, class_names, source)
    architecture = _architecture_overrides(state, payload.get("args"), source)
    official = {
        "network": _network(payload, source),
        "result": _result(payload, source),
        "iteration": _iteration(payload),
    }
    cfg = load_config(preset, "release", None, [*architecture, *overrides, "model.pretrained=none"])
    reference = build_network(cfg.model, num_classes, pretrained=False).state_dict()
    converted = _match(state, reference, source)
    return {
        "config": asdict(cfg),
        "class_names": list(names),
        "iteration": official["iteration"],
        "online": converted,
        "assignment": converted,
        "thresholds": CplThresholds.from_config(cfg.method).state_dict(),
        "best_miou": float("nan"),
        "metrics": None,
        "official": official,
    }


def _num_classes(state: dict, source: str) -> int:
    weight = state.get("classifier.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise CosaError(f"{source}: no 'classifier.weight' tensor of shape C×D×1×1 in its 'model' state dict")
    return weight.shape[0]


def _preset(num_classes: int, source: str) -> str:
    if num_classes not in PRESET_BY_CLASSES:
        raise CosaError(
            f"{source}: classifier.weight has {num_classes} classes; only 20 (VOC) and 80 (COCO) "
            "are known, pass a preset and class names for other models"
        )
    return PRESET_BY_CLASSES[num_classes]


def _class_names(num_classes: int, given: Sequence[str] | None, source: str) -> tuple[str, ...]:
    if given is not None:
        if len(given) != num_classes:
            raise CosaError(
                f"{source}: classifier.weight has {num_classes} classes but {len(given)} class names were given"
            )
        return tuple(given)
    if num_classes not in CLASS_NAMES_BY_COUNT:
        raise CosaError(f"{source}: classifier.weight has {num_classes} classes; pass their class names")
    return CLASS_NAMES_BY_COUNT[num_classes]


def _architecture_overrides(state: dict, args: Any, source: str) -> list[str]:
    """``model.backbone`` and ``model.aux_layer`` from the run's ``args``, else from the weights."""
    if args is None:
        return _width_backbone(state)
    if not isinstance(args, argparse.Namespace):
        raise CosaError(f"{source}: 'args' is a {type(args).__name__}, expected the run's argparse.Namespace")
    settings = vars(args)
    backbone, aux_layer = settings.get("backbone"), settings.get("aux_layer")
    if backbone is not None and not isinstance(backbone, str):
        raise CosaError(f"{source}: args.backbone is {backbone!r}, expected a timm model name")
    depth = len({key.split(".")[2] for key in state if key.startswith("encoder.blocks.")})
    if aux_layer is not None and (type(aux_layer) is not int or depth and not -depth <= aux_layer < depth):
        raise CosaError(
            f"{source}: args.aux_layer is {aux_layer!r}, expected a block index of its {depth}-block encoder"
        )
    default = ModelConfig().backbone
    if backbone == default.split(".")[0]:
        backbone = default  # the released ViT-B/16 is our default's architecture; keep its full name
    overrides = [f"model.backbone={backbone}"] if backbone and timm.is_model(backbone) else _width_backbone(state)
    return overrides + ([f"model.aux_layer={aux_layer}"] if aux_layer is not None else [])


def _width_backbone(state: dict) -> list[str]:
    """``model.backbone`` of the ViT whose width the file's class token has (none when unknown)."""
    token = state.get("encoder.cls_token")
    width = token.shape[-1] if isinstance(token, torch.Tensor) and token.ndim == 3 else None
    return [f"model.backbone={VIT_BY_WIDTH[width]}"] if width in VIT_BY_WIDTH else []


def _match(state: dict, reference: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` in the order and dtypes of ``reference``; every tensor present, of the right shape."""
    converted = {}
    for key, expected in reference.items():
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise CosaError(f"{source}: missing tensor '{key}' (the converted network needs it)")
        if value.shape != expected.shape:
            raise CosaError(
                f"{source}: '{key}' has shape {tuple(value.shape)} but the network of its "
                f"config needs {tuple(expected.shape)}"
            )
        converted[key] = value.to(expected.dtype)
    unexpected = sorted(set(state) - set(reference))
    if unexpected:
        raise CosaError(
            f"{source}: tensor '{unexpected[0]}' has no place in the CoSA network ({len(unexpected)} unexpected in all)"
        )
    return converted


def _iteration(payload: dict) -> int:
    value = payload.get("iteration", payload.get("iter", payload.get("epoch", 0)))  # save_best: 'epoch'
    return value if isinstance(value, int) else 0


def _network(payload: dict, source: str) -> str | None:
    s_or_t = payload.get("s_or_t")
    if s_or_t is not None and (not isinstance(s_or_t, str) or s_or_t not in NETWORK_BY_S_OR_T):
        raise CosaError(f"{source}: s_or_t is {s_or_t!r}, expected 's' (online) or 't' (assignment)")
    return NETWORK_BY_S_OR_T.get(s_or_t)


def _result(payload: dict, source: str) -> float | None:
    result = payload.get("result")
    if result is not None and (isinstance(result, bool) or not isinstance(result, (int, float))):
        raise CosaError(f"{source}: result is {result!r}, expected the best mIoU as a number")
    return None if result is None else float(result)  # numpy.float64 → float, for weights_only reads
