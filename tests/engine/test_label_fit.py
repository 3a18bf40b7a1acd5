"""The classifier's fit to the training tags: average precision by brute force, the sliding
window, and the trainer's report when the pseudo-label losses switch on and at the end."""

import logging

import pytest
import torch
from sklearn.metrics import average_precision_score

from cosa.config import load_config
from cosa.engine.distributed import DistContext
from cosa.engine.label_fit import Fit, LabelFit, average_precision
from cosa.engine.runlog import read_metrics
from cosa.engine.trainer import Trainer

from conftest import TINY_OVERRIDES

CPU = DistContext(0, 1, 0, torch.device("cpu"))


def test_average_precision_equals_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 4, generator=generator)
    targets = (torch.rand(50, 4, generator=generator) < 0.3).long()
    expected = [100 * average_precision_score(targets[:, c], scores[:, c]) for c in range(4)]
    assert average_precision(scores, targets).tolist() == pytest.approx(expected, abs=1e-4)


def test_average_precision_by_hand_and_without_positives():
    # Ranked 0.9 (hit), 0.5 (miss), 0.2 (hit): AP = (1/1 + 2/3) / 2.
    ap = average_precision(torch.tensor([[0.9, 0.1], [0.5, 0.3], [0.2, 0.2]]), torch.tensor([[1, 0], [0, 0], [1, 0]]))
    assert ap[0].item() == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert ap[1].isnan()


def test_the_window_holds_the_last_crops_and_skips_classes_never_tagged():
    fit = LabelFit(num_classes=3, device=torch.device("cpu"), window=4)
    assert fit.measure(0) is None
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(3, 3, generator=generator), torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]]))] * 3
    for logits, tags in batches:
        fit.update(logits, tags)
    # 9 crops seen: the window holds crops 6..9, that is batch 2's last crop and batch 3.
    scores = torch.cat([batches[1][0][2:], batches[2][0]])
    tags = torch.cat([batches[1][1][2:], batches[2][1]])
    measured = fit.measure(3)
    assert measured.map == pytest.approx(average_precision(scores, tags)[:2].mean().item())  # class 2 never tagged
    # Chance: random scores' AP is the tag frequency; cat and dog are each in 3 of the 4 crops.
    assert measured.chance == pytest.approx(75.0)


def test_the_late_rise_compares_the_means_of_two_eighths_a_quarter_apart():
    fit = LabelFit(num_classes=2, device=torch.device("cpu"))
    # A run of 800: the eighth (500, 600] against (700, 800]; 450 and 650 fall in neither.
    fit.history = {450: 0.0, 550: 40.0, 600: 44.0, 650: 99.0, 750: 45.0, 800: 51.0}
    assert fit.late_rise(800) == pytest.approx(48.0 - 42.0)
    assert fit.late_rise(1600) is None  # nothing measured after 1,400


def test_the_warnings_by_hand():
    fit = LabelFit(num_classes=2, device=torch.device("cpu"))
    assert "now 75" in fit.switch_on_warning(Fit(map=31.0, chance=21.5), warmup_iters=75)  # 9.5 above chance
    assert fit.switch_on_warning(Fit(map=31.5, chance=21.5), warmup_iters=75) is None
    fit.history = {600: 46.0, 800: 51.5}
    assert "+5.5" in fit.end_warning(Fit(map=51.5, chance=20.0), iteration=800)
    fit.history[800] = 51.0
    assert fit.end_warning(Fit(map=51.0, chance=20.0), iteration=800) is None  # +5.0 is not more than 5


def trained(data, tmp_path, *overrides):
    cfg = load_config("demo", "release", str(data), [*TINY_OVERRIDES, *overrides])
    trainer = Trainer(cfg, tmp_path / "run", CPU)
    trainer.fit()
    return [entry for entry in read_metrics(tmp_path / "run") if "fit/training_tags_map" in entry]


def test_the_fit_is_reported_at_the_switch_on_and_the_end_with_warnings(tiny_data, tmp_path, caplog, monkeypatch):
    # Criteria no 6-step run can meet: the warnings are then certain (the criteria are tested above).
    monkeypatch.setattr("cosa.engine.label_fit.MIN_GAIN", 101.0)
    monkeypatch.setattr("cosa.engine.label_fit.MAX_LATE_RISE", -101.0)
    with caplog.at_level(logging.WARNING, logger="cosa.engine.monitor"):
        logged = trained(tiny_data, tmp_path, "train.log_every=2")  # switch-on after iteration 3 (warm-up 2)
    assert [entry["iteration"] for entry in logged] == [2, 3, 4, 6]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert "raise method.loss_warmup_iters (now 2)" in warnings[0] and "of chance" in warnings[0]
    assert "still learning" in warnings[1] and "raise train.iterations (now 6)" in warnings[1]


def test_no_warning_when_the_classifier_fits(tiny_data, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("cosa.engine.label_fit.MIN_GAIN", -101.0)
    monkeypatch.setattr("cosa.engine.label_fit.MAX_LATE_RISE", 101.0)
    with caplog.at_level(logging.WARNING, logger="cosa.engine.monitor"):
        trained(tiny_data, tmp_path)
    assert not [record for record in caplog.records if "classifier" in record.getMessage()]
