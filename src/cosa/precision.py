"""Mixed precision: one name per autocast mode (``train.amp``, ``train.assignment_amp``)."""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, mode: str) -> contextlib.AbstractContextManager:
    """Autocast for ``mode`` (none, bf16, fp16); ``same`` keeps whatever the caller set."""
    if mode == "same":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AMP_DTYPES.get(mode, torch.bfloat16), enabled=mode != "none")
