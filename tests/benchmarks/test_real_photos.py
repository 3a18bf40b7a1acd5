"""benchmarks/real_photos.py: the real-photo benchmark is a valid folder dataset, the same for the
same seed, with objects from disjoint photographs in its two splits, and contexts that are
background beside the same objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cosa.data.check import check_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_photos.py"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

pytest.importorskip("skimage", reason="the benchmarks extra (pip install -e '.[benchmarks]')")
pytest.importorskip("imgviz", reason="the benchmarks extra (pip install -e '.[benchmarks]')")
pytestmark = [
    pytest.mark.skipif(
        not FASHION_MNIST.is_dir(), reason="Fashion-MNIST (apt-get install dataset-fashion-mnist; .ci/run does)"
    ),
    pytest.mark.slow,
]


def generate(out: Path, seed: int, *options: str) -> None:
    command = [sys.executable, SCRIPT, out, "--seed", str(seed), "--train", "12", "--val", "4", *options]
    subprocess.run(command, check=True)


def test_a_valid_dataset_byte_identical_for_a_seed(tmp_path):
    generate(tmp_path / "a", 1)
    generate(tmp_path / "b", 1)
    generate(tmp_path / "c", 2)
    report = check_dataset(tmp_path / "a")
    assert report.problems == [] and report.images == {"train": 12, "val": 4}  # tags agree with masks
    files = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*") if path.is_file())
    assert len(files) == 2 * 16 + 5  # images, masks, classes, two lists, the summary, the manifest
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert (tmp_path / "a" / "train.csv").read_text() != (tmp_path / "c" / "train.csv").read_text()
    statistics = report.statistics["train"]
    assert statistics.median_short_side == 128 and 0.15 < statistics.median_object_side / 128 < 0.45


def test_contexts_are_background_beside_the_same_objects(tmp_path):
    from PIL import Image

    from cosa.data.layouts import load_split

    generate(tmp_path / "plain", 1)
    generate(tmp_path / "context", 1, "--context", "0.8", "--context-size", "1.5")
    assert check_dataset(tmp_path / "context").problems == []
    split = load_split(tmp_path / "context", "train")
    assert len(split.extra_metrics) == 1  # every evaluation reports the coexistence scores
    with_context = 0
    for sample in split.samples:
        mask = np.asarray(Image.open(sample.mask))
        context = np.asarray(Image.open(sample.context))
        plain = np.asarray(Image.open(tmp_path / "plain" / "masks" / sample.mask.name))
        assert not (context[mask > 0]).any()  # objects hide their context; a context is background
        assert set(np.unique(mask)) - {0} <= set(np.unique(plain)) - {0}  # the same objects, some hidden
        assert ((mask == plain) | (mask == 0)).all()
        with_context += bool(context.any())
    assert with_context >= len(split.samples) // 2
