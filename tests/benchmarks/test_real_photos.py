"""benchmarks/real_photos.py: the real-photo benchmark is a valid folder dataset, the same for the
same seed, with objects from disjoint photographs in its two splits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def generate(out: Path, seed: int) -> None:
    subprocess.run([sys.executable, SCRIPT, out, "--seed", str(seed), "--train", "12", "--val", "4"], check=True)


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
