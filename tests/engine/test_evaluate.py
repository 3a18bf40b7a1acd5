"""Evaluation (engine/evaluate.py) and the rules it shares with prediction (engine/inference.py):
one protocol per checkpoint, the cam-only segmentation, the confusion matrix behind the IoUs."""

import json

import numpy as np
import pytest
import torch

from cosa.config.load import load_config
from cosa.data.io import IGNORE_INDEX, read_mask, write_mask
from cosa.data.layouts import load_split
from cosa.engine.distributed import DistContext, resolve_device
from cosa.engine.evaluate import evaluate
from cosa.engine.inference import as_set, predicted_labels, protocol_text
from cosa.engine.trained import load_trained

from conftest import cli_error, good_dataset, run_cli, square_mask

CLASS_NAMES = ("background", "ball", "block", "tent", "star", "ring", "boat")


def test_evaluate_prints_the_number_and_protocol_of_the_runs_final_metrics(trained_run, tmp_path, capsys):
    final = json.loads((trained_run / "final_metrics.json").read_text())
    checkpoint = trained_run / "checkpoints" / "last.pt"
    code, out, _ = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--json", tmp_path / "metrics.json")
    assert code == 0
    assert out.splitlines()[-1] == (
        f"mIoU {final['miou_unmasked']:.2f} unmasked, {final['miou_tag_masked']:.2f} tag-masked "
        "(val, 8 images, 2 scales + flip, size 64, assignment network)"
    )
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert (evaluated["miou_unmasked"], evaluated["miou_tag_masked"]) == (
        final["miou_unmasked"],
        final["miou_tag_masked"],
    )
    weights = {"checkpoint": str(checkpoint), "iteration": 6}  # which weights: what only evaluate knows
    assert evaluated["protocol"] == {**final["protocol"], **weights}
    assert final["protocol"]["cpl_thresholds"] == [0.8, 0.2]  # the demo's δ_h and δ_l as set, not as float32


def cfg_of(recipe: str):
    return load_config("demo", recipe, None, ["eval.cam_threshold=0.5"])


# One image of 1×3 pixels, two classes. Decoder logits: background, class 1, class 2 per pixel.
SEG = torch.tensor([[[[0.0, 0.0, 5.0]], [[1.0, 3.0, 0.0]], [[2.0, 1.0, 0.0]]]])
CAMS = torch.tensor([[[[0.9, 0.2, 0.6]], [[0.1, 0.7, 0.4]]]])
CLASS_LOGITS = torch.tensor([[2.0, -1.0]])  # the classifier sees class 1 only


@pytest.mark.parametrize(
    ("recipe", "tags", "expected"),
    [
        ("release", None, [2, 1, 0]),  # argmax of the decoder
        ("release", [[1.0, 0.0]], [1, 1, 0]),  # class 2 masked
        ("cam-only", None, [1, 0, 1]),  # CAM of the predicted class 1 above 0.5
        ("cam-only", [[0.0, 1.0]], [0, 2, 0]),  # CAM of the tagged class 2 above 0.5
        ("cam-only", [[1.0, 1.0]], [1, 2, 1]),  # the strongest CAM of the tagged classes
    ],
)
def test_a_cam_only_models_segmentation_is_its_thresholded_cams(recipe, tags, expected):
    tags = None if tags is None else torch.tensor(tags)
    labels = predicted_labels(SEG, CAMS, CLASS_LOGITS, cfg_of(recipe), tags)
    assert labels.tolist() == [[expected]]


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({}, "val, 1449 images, 5 scales + flip, size 448, assignment network"),
        (
            {"scales": [1.0], "flip": False, "network": "online", "amp": "bf16", "crf": True},
            "val, 1449 images, scale 1.0, size 448, online network, bf16 autocast, CRF",
        ),
        (
            {"segmentation_from": "cam", "scales": [1.5]},
            "val, 1449 images, scale 1.5 + flip, size 448, assignment network, thresholded CAMs",
        ),
    ],
)
def test_the_protocol_in_words(changes, text):
    protocol = {
        "network": "assignment",
        "recipe": "release",
        "segmentation_from": "decoder",
        "input_size": 448,
        "scales": [1.0, 0.5, 1.5, 0.75, 1.25],
        "flip": True,
        "amp": "none",
        "split": "val",
        "num_images": 1449,
        "crf": False,
    }
    assert protocol_text({**protocol, **changes}) == text


def test_prediction_protocol_without_a_split_says_tag_masked():
    protocol = {
        "network": "assignment",
        "segmentation_from": "decoder",
        "input_size": 64,
        "scales": [1.0, 0.5],
        "flip": False,
        "amp": "none",
        "tag_masked": True,
    }
    assert protocol_text(protocol) == "2 scales, size 64, assignment network, tag-masked"


@pytest.mark.parametrize("value", [0.8, 0.2, 0.95, 0.1, 1e-5, 0.7312345])
def test_a_float32_setting_reads_back_as_set(value):
    stored = float(np.float32(value))
    assert stored != value  # what a float32 tensor gives back
    assert as_set(stored) == value and np.float32(as_set(stored)) == np.float32(value)


def test_confusion_matrix_agrees_with_the_ious(trained_run, tiny_data):
    device = resolve_device("cpu")
    model = load_trained(trained_run / "checkpoints" / "last.pt", device)
    split = load_split(tiny_data, "val")
    result = evaluate(
        model.network,
        split,
        model.cfg,
        model.thresholds,
        DistContext(0, 1, 0, device),
        max_images=5,
        return_confusion=True,
    )
    confusion = result["confusion"]
    assert len(confusion) == len(CLASS_NAMES) and all(len(row) == len(CLASS_NAMES) for row in confusion)
    assert all(isinstance(count, int) for row in confusion for count in row)
    valid = sum(int((read_mask(sample.mask) != IGNORE_INDEX).sum()) for sample in split.samples[:5])
    assert sum(map(sum, confusion)) == valid
    for c, name in enumerate(CLASS_NAMES):  # IoU = tp / (ground truth + predicted − tp)
        row, column = sum(confusion[c]), sum(line[c] for line in confusion)
        expected = None if row == 0 else round(100 * confusion[c][c] / (row + column - confusion[c][c]), 2)
        assert result["per_class"][name] == pytest.approx(expected)
    background = confusion[0][0] / (sum(confusion[0]) + sum(line[0] for line in confusion) - confusion[0][0])
    assert result["per_class"]["background"] == pytest.approx(round(100 * background, 2))
    without = evaluate(model.network, split, model.cfg, model.thresholds, DistContext(0, 1, 0, device), max_images=5)
    assert "confusion" not in without and without == {k: v for k, v in result.items() if k != "confusion"}


def test_evaluate_stops_at_a_bad_mask_with_one_line(tmp_path, capsys, checkpoint):
    root = good_dataset(tmp_path / "ds")
    write_mask(root / "masks" / "b.png", square_mask(1, size=(8, 8)))
    line = cli_error(capsys, "evaluate", "--checkpoint", checkpoint, "--data", root, "--split", "train")
    assert line.endswith(f"{root / 'masks' / 'b.png'}: mask is (8, 8) but its image is (16, 20)")
