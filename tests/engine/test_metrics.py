"""The confusion matrix and mIoU against a brute-force count."""

import math

import numpy as np
import torch

from cosa.data.io import IGNORE_INDEX
from cosa.engine.metrics import ConfusionMatrix


def brute_force_iou(predictions, targets, num_labels):
    iou = []
    for label in range(num_labels):
        tp = fp = fn = 0
        occurs = False
        for prediction, target in zip(predictions, targets):
            for p, t in zip(prediction.flatten().tolist(), target.flatten().tolist()):
                if t == IGNORE_INDEX:
                    continue
                occurs |= t == label
                tp += p == label and t == label
                fp += p == label and t != label
                fn += p != label and t == label
        iou.append(tp / (tp + fp + fn) if occurs else math.nan)
    return iou


def test_iou_matches_a_brute_force_count_over_several_images():
    rng = np.random.default_rng(0)
    num_labels = 5
    predictions, targets = [], []
    matrix = ConfusionMatrix(num_labels)
    for _ in range(4):
        target = torch.from_numpy(rng.integers(0, num_labels - 1, size=(7, 9)))  # label 4 never occurs
        target[torch.from_numpy(rng.random((7, 9)) < 0.2)] = IGNORE_INDEX
        prediction = torch.from_numpy(rng.integers(0, num_labels, size=(7, 9)))
        matrix.update(prediction, target)
        predictions.append(prediction)
        targets.append(target)
    expected = brute_force_iou(predictions, targets, num_labels)
    got = matrix.iou().tolist()
    assert math.isnan(got[4]) and math.isnan(expected[4])
    assert np.allclose(got[:4], expected[:4])
    assert matrix.mean_iou() == np.nanmean(expected) * 100


def test_perfect_prediction_and_per_class_report():
    target = torch.tensor([[0, 1], [2, IGNORE_INDEX]])
    matrix = ConfusionMatrix(4)
    matrix.update(target.clone(), target)
    assert matrix.mean_iou() == 100.0
    assert matrix.per_class(["background", "a", "b", "c"]) == {"background": 100.0, "a": 100.0, "b": 100.0, "c": None}
    assert matrix.pixel_accuracy() == 100.0
