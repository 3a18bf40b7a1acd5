"""The iteration-based trainer: one process or many, exact resume, periodic evaluation.

The loop is short on purpose: each iteration calls :meth:`Trainer.train_step` (losses from the
CoSA objective, backward, optimiser, EMA), then the bookkeeping that is due (log, save,
evaluate). What goes into a checkpoint and comes back out is engine/checkpoint.py's; what the run
logs of its steps is engine/monitor.py's.

A step reads nothing off the device, so on a GPU the host queues the next step while the last
one runs. What the host must know of a step (its losses, whether it was finite) waits on the
device until the next bookkeeping, which reads every step since in one go.

``last.pt`` is written before an evaluation due at the same iteration, so that a failure in the
evaluation (a bad mask, a kill) loses no training; resuming from such a checkpoint runs that
evaluation first, which keeps resumed runs exact (best.pt, the final metrics, the RNG stream).
"""

from __future__ import annotations

import inspect
import json
import os
import random
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from cosa.config.load import save_config
from cosa.config.schema import Config
from cosa.data.check import TrainingData, training_data
from cosa.data.datasets import StreamSampler, TrainingViews
from cosa.data.fingerprint import fingerprint
from cosa.engine.checkpoint import (
    load_checkpoint,
    remove_partial_writes,
    restore_training,
    save_checkpoint,
    training_checkpoint,
)
from cosa.engine.distributed import DistContext, all_gather_cat, all_reduce_sum, average_buffers, barrier
from cosa.engine.evaluate import evaluate
from cosa.engine.faults import StepGuard
from cosa.engine.graphs import GraphedForward
from cosa.engine.monitor import TrainingMonitor
from cosa.engine.run_dir import last_checkpoint
from cosa.engine.runlog import RunLog
from cosa.engine.schedule import build_optimizer, lr_factor, set_learning_rate
from cosa.errors import CosaError
from cosa.files import write_text_atomically
from cosa.method.cosa import CoSAObjective, StepLosses
from cosa.models.ema import ema_update
from cosa.models.network import build_network
from cosa.precision import autocast
from cosa.profiling import section, timed

# DistributedDataParallel's switch that stops it broadcasting rank 0's buffers before every forward:
# torch 2.14 renamed it and warns on the old name (which still also skips the sync at start, a
# no-op here: every process builds the same network).
_NO_BUFFER_SYNC = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else "broadcast_buffers"
)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every generator; ``deterministic`` also asks torch for deterministic kernels only.

    CUDA has no deterministic kernel for some backward passes (bilinear upsampling among them):
    torch then warns and names the operation instead of failing, so GPU runs may still differ.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class Trainer:
    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        dist: DistContext,
        resume: bool = False,
        data: TrainingData | None = None,
    ) -> None:
        self.cfg = cfg = with_absolute_root(cfg, resume)
        self.run_dir = Path(run_dir)
        self.dist = dist
        self.device = dist.device
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        # The splits, checked (cosa.data.check); run_training checks them before the run folder is made.
        self.train_split, self.val_split = data or training_data(cfg)
        self.dataset = fingerprint(self.train_split)
        self.class_names = self.train_split.class_names

        if resume and dist.is_main:  # the temporary files of the writes that the stop interrupted
            remove_partial_writes(self.run_dir, last_checkpoint(self.run_dir).parent)
        checkpoint = load_checkpoint(last_checkpoint(self.run_dir)) if resume else None
        # As released, the AN is built like the ON, not copied from it: the same pretrained
        # backbone, but heads from their own random initialisation, which the EMA then forgets.
        self.online, self.assignment = (self._build_network(pretrained=checkpoint is None) for _ in range(2))
        self.online.train()
        self.assignment.eval().requires_grad_(False)
        self.assignment_forward = GraphedForward(self.assignment)  # on a GPU, from CUDA graphs
        self.optimizer = build_optimizer(self.online, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self.objective = CoSAObjective(cfg.method, cfg.train.assignment_amp)
        if dist.distributed:
            self.objective.thresholds.gather = all_gather_cat
        self.monitor = TrainingMonitor(
            cfg, len(self.class_names), self.device, dist.is_main, masks=self.train_split.has_masks
        )
        self.guard = StepGuard(cfg.train.nonfinite, self.scaler.is_enabled(), self.device)
        self.iteration = 0
        self.best_miou = float("-inf")
        self.last_metrics: dict | None = None
        if checkpoint is not None:
            restore_training(self, checkpoint, last_checkpoint(self.run_dir))
        self.evaluation_pending = checkpoint is not None and self._evaluation_due()
        self.model = self.online
        if dist.distributed:
            self.model = DistributedDataParallel(
                self.online,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **{_NO_BUFFER_SYNC: False},  # buffers are averaged after every step instead
                find_unused_parameters=cfg.method.recipe == "cam-only",  # the decoder gets no loss
            )
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.runlog = RunLog(
            self.run_dir,
            dist.is_main,
            resume_from=self.iteration if resume else None,
            evaluation_pending=self.evaluation_pending,
        )

    # --- the loop ----------------------------------------------------------------------------

    def fit(self, batches: Iterable[dict] | None = None) -> dict | None:
        """Train to ``train.iterations``; returns the final evaluation (None without masks).

        ``batches``: the training batches from the current iteration on, as the loader makes them
        (``weak``, ``strong``, ``labels``, ``box``; ``mask`` where the recipe or the CPL monitor
        reads masks); by default the trainer's own loader over the training split.
        """
        if self.evaluation_pending:
            self._evaluate()
        # Log lines (warnings among them) go above the progress bar, not into it.
        with (
            logging_redirect_tqdm(),
            tqdm(
                total=self.cfg.train.iterations,
                initial=self.iteration,
                desc="train",
                disable=not self.dist.is_main,
                dynamic_ncols=True,
            ) as progress,
        ):
            self._iterate(progress, self._loader() if batches is None else batches)
        self.runlog.close()
        if self.dist.is_main and self.last_metrics is not None:
            write_text_atomically(self.run_dir / "final_metrics.json", json.dumps(self.last_metrics, indent=2))
        return self.last_metrics

    def _iterate(self, progress: tqdm, batches: Iterable[dict]) -> None:
        cfg = self.cfg.train
        started, started_iteration = time.time(), self.iteration
        for batch in batches:
            self.iteration += 1
            self.train_step(batch)
            progress.update()
            last = self.iteration == cfg.iterations
            switch_on = self.iteration == self.monitor.switch_on_iteration
            logging_due = self.iteration % cfg.log_every == 0 or last
            saving_due = self.iteration % cfg.checkpoint_every == 0 or last
            evaluation_due = self._evaluation_due()
            if switch_on or logging_due or saving_due or evaluation_due:
                for fault in self.monitor.settle(self.dist.world_size):  # the host's one wait for the device
                    self.guard.handle(fault, self.run_dir, lambda: training_checkpoint(self), self.dist.is_main)
            if switch_on or last:
                self.monitor.report_label_fit(self.runlog, self.iteration, last)
            if logging_due:
                seconds = (time.time() - started) / max(1, self.iteration - started_iteration)
                self._log(seconds, progress)
            if saving_due:
                self.save(last_checkpoint(self.run_dir))
            if evaluation_due:
                self._evaluate()

    def _evaluation_due(self) -> bool:
        return self.iteration % self.cfg.train.eval_every == 0 or self.iteration == self.cfg.train.iterations

    def _build_network(self, pretrained: bool) -> nn.Module:
        return build_network(self.cfg.model, len(self.class_names), pretrained=pretrained).to(self.device)

    def train_step(self, batch: dict) -> StepLosses:
        """One optimiser step of the online network, then the EMA update of the assignment network.

        A step whose loss or gradients are not finite changes neither network: the optimiser, the
        BatchNorm statistics and the EMA leave them as they were, decided on the device
        (engine/faults.py); the host handles the fault (``train.nonfinite``) at the next bookkeeping.
        """
        max_tags = int(batch["labels"].sum(dim=1).max())  # read on the host, before the copy
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        step = self.iteration - 1  # 0-based, as the released schedule and loss warm-up count
        set_learning_rate(self.optimizer, lr_factor(step, self.cfg.train.iterations, self.cfg.optim))
        # The forward pass updates BatchNorm statistics; a faulty step must not keep them.
        statistics = [buffer.clone() for buffer in self.online.buffers()]
        with section("objective"), autocast(self.device.type, self.cfg.train.amp):
            losses = self.objective(self.model, self.assignment_forward, batch, step, max_tags)
        with section("backward"):
            self.scaler.scale(losses.total).backward()
        self.scaler.unscale_(self.optimizer)  # fp16: the gradients as they are, for the check
        record = timed(
            "nonfinite_check", self.guard.check, self.iteration, batch, losses, self.online.parameters(), all_reduce_sum
        )
        skip = record.skipped
        with section("optimizer"):
            # Fused AdamW leaves parameters, moments and step counts as they were when found_inf
            # is set, on the device: the protocol of torch's GradScaler, used here for every mode.
            self.optimizer.grad_scale, self.optimizer.found_inf = None, skip.float()
            self.optimizer.step()
            del self.optimizer.grad_scale, self.optimizer.found_inf
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        with section("ema"):
            for buffer, saved in zip(self.online.buffers(), statistics):
                buffer.copy_(torch.where(skip, saved, buffer))
            average_buffers(self.online, self.dist.world_size)
            ema_update(self.assignment, self.online, self.cfg.method.ema_momentum, skip)
        self.monitor.record(record, losses, batch, self.objective.thresholds)
        return losses

    def _loader(self) -> DataLoader:
        cfg = self.cfg
        views = TrainingViews(
            self.train_split,
            cfg.data.crop_size,
            tuple(cfg.data.scale_range),
            cfg.data.blur_probability,
            cfg.train.seed,
            with_masks=cfg.method.recipe == "supervised" or self.monitor.cpl is not None,
        )
        sampler = StreamSampler(
            cfg.train.batch_size, self.dist.rank, self.dist.world_size, self.iteration, cfg.train.iterations
        )
        return DataLoader(
            views,
            batch_size=sampler.per_process,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    # --- bookkeeping ---------------------------------------------------------------------------

    def _log(self, seconds_per_step: float, progress: tqdm) -> None:
        learning_rate = self.optimizer.param_groups[0]["lr"]
        thresholds = self.objective.thresholds
        record = self.monitor.write_log(
            self.runlog, self.iteration, thresholds, learning_rate, seconds_per_step, self.guard.skipped_steps
        )
        if "train/loss" in record:
            progress.set_postfix(loss=f"{record['train/loss']:.4f}", refresh=False)

    def _evaluate(self) -> None:
        if self.val_split is None:
            return
        result = evaluate(
            self.assignment,
            self.val_split,
            self.cfg,
            self.objective.thresholds,
            self.dist,
            max_images=self.cfg.eval.max_images,
            progress=True,
        )
        self.last_metrics = result
        self.monitor.write_evaluation(self.runlog, self.iteration, result)
        if result["miou_unmasked"] > self.best_miou:
            self.best_miou = result["miou_unmasked"]
            self.save(self.run_dir / "checkpoints" / "best.pt", full=False)

    def save(self, path: Path, full: bool = True) -> None:
        if self.dist.is_main:
            save_checkpoint(path, training_checkpoint(self, full))
        barrier()


def with_absolute_root(cfg: Config, resume: bool) -> Config:
    """``cfg`` with its dataset as an absolute path, so that the run can be resumed, evaluated and
    its predictions made from any folder."""
    if cfg.data.root is None:
        raise CosaError("no dataset: pass --data ROOT (or set data.root)")
    root = Path(cfg.data.root).expanduser()
    if resume and not root.exists():
        raise CosaError(f"{root}: the run's dataset is not there; if it moved, resume with --data NEW_PATH")
    return replace(cfg, data=replace(cfg.data, root=str(root.absolute())))
