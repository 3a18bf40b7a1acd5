"""``cosa export-pseudo-labels``: one palette PNG per image, and scores that the PNGs reproduce."""

import json

import numpy as np
import pytest
from PIL import Image

from cosa.cli.main import main
from cosa.data.layouts import load_split

NUM_CLASSES = 6  # the synthetic dataset's shapes


def recount(out, split):
    """mIoU over labelled pixels, coverage, precision and recall, from the written PNGs and the masks."""
    labels = NUM_CLASSES + 1
    matrix = np.zeros((labels, labels), dtype=np.int64)
    correct = labelled = valid = 0
    for sample in split.samples:
        pseudo = np.asarray(Image.open(out / f"{sample.name}.png")).astype(np.int64)
        mask = np.asarray(Image.open(sample.mask)).astype(np.int64)
        known = mask != 255
        scored = known & (pseudo != 255)
        np.add.at(matrix, (mask[scored], pseudo[scored]), 1)
        correct += int((pseudo[scored] == mask[scored]).sum())
        labelled += int(scored.sum())
        valid += int(known.sum())
    occurs = matrix.sum(1) > 0
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    iou = np.diag(matrix)[occurs] / np.maximum(union[occurs], 1)
    return {
        "miou": 100 * iou.mean(),
        "coverage": 100 * labelled / valid,
        "precision": 100 * correct / labelled,
        "recall": 100 * correct / valid,
    }


def test_export_writes_every_image_and_scores_them(trained_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "pseudo"
    code = main(
        [
            "export-pseudo-labels",
            "--checkpoint",
            str(trained_run / "checkpoints" / "last.pt"),
            "--data",
            str(tiny_data),
            "--split",
            "train",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0 and "pseudo-label mIoU" in capsys.readouterr().out
    split = load_split(tiny_data, "train")
    assert len(list(out.glob("*.png"))) == len(split.samples) == 24
    seen = set()
    for sample in split.samples:
        with Image.open(out / f"{sample.name}.png") as written, Image.open(sample.image) as image:
            assert written.mode == "P" and written.size == image.size
            seen |= set(np.unique(np.asarray(written)).tolist())
    assert seen <= set(range(NUM_CLASSES + 1)) | {255} and 255 in seen and len(seen) > 2
    summary = json.loads((out / "summary.json").read_text())
    for key, value in recount(out, split).items():
        assert summary[key] == pytest.approx(value, abs=1e-9), key
    assert summary["protocol"]["split"] == "train" and summary["protocol"]["num_images"] == 24
    assert summary["protocol"]["scales"] == [1.0, 0.5, 1.5] and summary["protocol"]["rule"] == "released"


def test_export_defaults_to_the_training_data_and_honours_max_images(trained_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "pseudo"
    code = main(
        [
            "export-pseudo-labels",
            "--checkpoint",
            str(trained_run / "checkpoints" / "last.pt"),
            "--out",
            str(out),
            "--max-images",
            "3",
        ]
    )
    assert code == 0 and "wrote 3 pseudo-label masks" in capsys.readouterr().out
    first = load_split(tiny_data, "train").samples[:3]
    assert sorted(path.name for path in out.glob("*.png")) == sorted(f"{sample.name}.png" for sample in first)
    assert json.loads((out / "summary.json").read_text())["protocol"]["num_images"] == 3
