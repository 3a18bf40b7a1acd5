"""benchmarks/context_values.py: the values of a class's CAM and segmentation on its objects, its
context and the rest of the background, over every (image, class) pair of a split."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cosa.data.layouts import load_split, read_class_names

from conftest import save_untrained_checkpoint

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from context_values import QUANTILES, REGIONS, context_values  # noqa: E402
from test_real_photos import FASHION_MNIST, generate  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST (apt-get install dataset-fashion-mnist)"),
    pytest.mark.slow,
]


def test_every_class_of_every_image_is_measured_in_ordered_quantiles(tmp_path):
    generate(tmp_path / "data", 3, "--context", "1.0")
    names = read_class_names(tmp_path / "data" / "classes.txt")
    checkpoint = save_untrained_checkpoint(tmp_path / "last.pt", names, f"data.root={tmp_path / 'data'}")
    result = context_values(str(checkpoint), str(tmp_path / "data"), "val")
    shown = sum(len(sample.labels) for sample in load_split(tmp_path / "data", "val").samples)
    assert sum(result["cam_peak_on"].values()) == shown  # one peak per (image, class)
    for kind in ("cam", "segmentation"):
        for region in REGIONS:
            values = list(result["quantiles"][kind][region].values())
            assert len(values) == len(QUANTILES) and values == sorted(values) and 0 <= values[0] <= values[-1] <= 1
