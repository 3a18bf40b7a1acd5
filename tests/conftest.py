"""Shared fixtures: a tiny synthetic dataset and configurations that train in seconds on a CPU."""

from __future__ import annotations

import os

import pytest
import torch

from cosa.data.synthetic import generate_synthetic_dataset

# Tests run in parallel (pytest-xdist); one thread each avoids oversubscribing the cores.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_OVERRIDES = [
    "model.backbone=mobilenetv2_050",
    "model.pretrained=none",
    "data.crop_size=64",
    "data.num_workers=0",
    "train.batch_size=4",
    "train.iterations=6",
    "train.log_every=2",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "method.loss_warmup_iters=2",
    "method.contrastive.warmup_iters=2",
    "optim.warmup_iters=2",
    "eval.size=64",
    "eval.scales=[1.0,0.5]",
    "eval.batch_size=8",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """24 training and 8 validation images of 64 px, with masks."""
    root = tmp_path_factory.mktemp("tiny_data")
    generate_synthetic_dataset(root, seed=0, num_train=24, num_val=8, image_size=64)
    return root
