"""AdamW with 10× learning rate on the heads, and the released poly schedule with linear warm-up."""

from __future__ import annotations

import torch

from cosa.config.schema import OptimConfig
from cosa.models.network import CoSANet


def build_optimizer(network: CoSANet, cfg: OptimConfig) -> torch.optim.AdamW:
    backbone, heads = network.parameter_groups()
    return torch.optim.AdamW(
        [
            {"params": backbone, "lr": cfg.lr, "initial_lr": cfg.lr},
            {"params": heads, "lr": cfg.lr * cfg.head_lr_multiplier, "initial_lr": cfg.lr * cfg.head_lr_multiplier},
        ],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        weight_decay=cfg.weight_decay,
        # One kernel for all parameters, and the only AdamW that can skip a step on the device
        # (the trainer's non-finite check) without the host reading a flag.
        fused=True,
    )


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the base rates for the update made at 0-based ``step``.

    Linear from ``warmup_ratio`` to 1 over ``warmup_iters``, then (1 − step/total)^power; the
    poly part counts from step 0, as released.
    """
    if step < cfg.warmup_iters:
        return 1.0 - (1.0 - step / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
    return max(0.0, 1.0 - step / total_steps) ** cfg.power


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
