"""What the trainer's bookkeeping reads of its steps: loss means over the steps that changed the
networks, faults named by step and term, the thresholds logged per interval."""

import math

import pytest
import torch

from cosa.config import load_config
from cosa.engine.faults import Fault, StepRecord
from cosa.engine.monitor import TrainingMonitor
from cosa.method.thresholds import CplThresholds

NAN = float("nan")


class MemoryLog:
    """A RunLog that keeps its records."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict]] = []

    def write(self, iteration: int, values: dict) -> None:
        self.records.append((iteration, values))


def step(iteration: int, values: list[float], nonfinite: list[bool] | None = None, skipped: bool = False):
    names = ["cls", "s2c", "total", "gradients"]
    flags = nonfinite or [False] * len(names)
    return StepRecord(iteration, names, torch.tensor(values), torch.tensor(flags), torch.tensor(skipped))


@pytest.fixture
def monitor():
    cfg = load_config("demo", "release", None, ["train.monitor_cpl=false"])
    return TrainingMonitor(cfg, num_classes=3, device=torch.device("cpu"), is_main=True, masks=False)


def test_settle_averages_the_steps_that_changed_the_networks_and_names_the_faults(monitor):
    monitor.pending = [
        step(1, [1.0, 2.0, 3.0]),
        step(2, [NAN, 2.0, NAN], [True, False, True, False], skipped=True),
        step(3, [3.0, 4.0, 7.0], [False, False, False, True], skipped=True),
        step(4, [5.0, 6.0, 11.0]),
    ]
    faults = monitor.settle(world_size=1)
    assert [str(fault) for fault in faults] == [
        "step 2: non-finite cls, total (cls=nan)",
        "step 3: non-finite gradients",
    ]
    assert monitor.pending == [] and monitor.settle(world_size=1) == []
    thresholds = CplThresholds.from_config(monitor.cfg.method)
    runlog = MemoryLog()
    record = monitor.write_log(runlog, 4, thresholds, learning_rate=0.5, seconds_per_step=2.0, skipped_steps=2)
    assert runlog.records == [(4, record)]
    assert {key: record[key] for key in ("train/loss", "train/cls", "train/s2c", "train/skipped_steps")} == {
        "train/loss": 7.0,
        "train/cls": 3.0,
        "train/s2c": 4.0,
        "train/skipped_steps": 2,
    }
    assert record["train/lr"] == 0.5 and record["train/seconds_per_step"] == 2.0
    assert record["thresholds/cam_high"] == thresholds.values()["cam_high"]
    # The next interval starts empty: an interval of skipped steps only has no means.
    monitor.pending = [step(5, [NAN, 1.0, NAN], [True, False, True, False], skipped=True)]
    monitor.settle(world_size=1)
    later = monitor.write_log(runlog, 6, thresholds, learning_rate=0.5, seconds_per_step=2.0, skipped_steps=3)
    assert not [key for key in later if key in ("train/loss", "train/cls")]


def test_a_fault_without_a_loss_term_shows_no_values():
    assert str(Fault(7, ["gradients"], {})) == "step 7: non-finite gradients"
    assert str(Fault(7, ["s2c", "total"], {"s2c": math.inf})) == "step 7: non-finite s2c, total (s2c=inf)"
