"""The speed options change how the step computes, not what (issue: performance)."""

import torch
import torch.nn.functional as F

import cosa.method.cosa as objective_module
from cosa.config import load_config
from cosa.engine.distributed import DistContext
from cosa.engine.trainer import Trainer
from cosa.models.backbone import build_backbone

from conftest import TINY_OVERRIDES

CPU = DistContext(0, 1, 0, torch.device("cpu"))


def first_losses(data, tmp_path, *extra, steps: int = 2) -> list[float]:
    cfg = load_config("demo", "release", str(data), [*TINY_OVERRIDES, f"train.iterations={steps}", *extra])
    trainer = Trainer(cfg, tmp_path, CPU)
    losses = []
    for batch in trainer._loader():
        trainer.iteration += 1
        losses.append(float(trainer.train_step(batch).total.detach()))
    return losses


def test_the_vit_backbone_uses_fused_scaled_dot_product_attention(monkeypatch):
    vit = build_backbone("vit_tiny_patch16_224", "none", aux_layer=-3, output_stride=16).eval()
    attention = [module for module in vit.modules() if hasattr(module, "fused_attn")]
    assert len(attention) == 12 and all(module.fused_attn for module in attention)
    calls = []
    original = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        vit(torch.randn(1, 3, 64, 64))
    assert len(calls) == 12


def test_assignment_amp_applies_to_the_assignment_pass_only(tiny_data, tmp_path, monkeypatch):
    seen = {}
    original_assign, original_forward = objective_module.multiscale_assignments, objective_module.resize

    def assignments(*args, **kwargs):
        seen["assignment"] = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
        return original_assign(*args, **kwargs)

    def resize(*args, **kwargs):  # called right after the online forward
        seen.setdefault("online", torch.is_autocast_enabled("cpu"))
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(objective_module, "multiscale_assignments", assignments)
    monkeypatch.setattr(objective_module, "resize", resize)
    losses = first_losses(tiny_data, tmp_path, "train.assignment_amp=bf16", steps=1)
    assert seen == {"assignment": (True, torch.bfloat16), "online": False}
    assert all(torch.isfinite(torch.tensor(losses)))
