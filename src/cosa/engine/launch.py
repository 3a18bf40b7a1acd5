"""A training run in this process, as ``cosa train`` starts it: the checks that need no model, the
run folder's claim and the dataset's read lock around :meth:`cosa.engine.trainer.Trainer.fit`."""

from __future__ import annotations

from pathlib import Path

from cosa.config.load import check_run_length
from cosa.config.schema import Config
from cosa.data.check import training_data
from cosa.data.datasets import per_process_batch
from cosa.engine import distributed
from cosa.engine.evaluate import format_results
from cosa.engine.run_dir import claim
from cosa.engine.runlog import setup_logging
from cosa.engine.trainer import Trainer, with_absolute_root
from cosa.outputs import read_lock, refuse_inputs


def summarize(result: dict | None) -> str:
    return format_results(result) if result else "no evaluation (the validation split has no masks)"


def run_training(cfg: Config, run_dir: Path, resume: bool = False) -> dict | None:
    """Train in this process (joining torchrun's group if any), holding ``run_dir``; returns the final evaluation."""
    dist = distributed.init_distributed(cfg.train.device)
    setup_logging(dist.is_main)
    try:
        # Mistakes that need no data are told before the run folder is made or locked.
        per_process_batch(cfg.train.batch_size, dist.world_size)
        if not resume:  # a resumed run was checked when it started, and may only grow longer
            check_run_length(cfg)
        if cfg.data.root is not None:  # the run folder is deleted to start over: the dataset must not be in it
            refuse_inputs(run_dir, "--out", [("the dataset", cfg.data.root)], "folder")
        # So are the data's (cosa.data.check): a failing check costs seconds and leaves nothing.
        cfg = with_absolute_root(cfg, resume)
        data = training_data(cfg)
        dataset_lock = read_lock(data.train.root)
        try:
            with claim(run_dir, resume, dist):
                return Trainer(cfg, run_dir, dist, resume=resume, data=data).fit()
        finally:
            if dataset_lock is not None:
                dataset_lock.release()
    finally:
        distributed.shutdown()
