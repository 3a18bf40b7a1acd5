"""The iteration-based trainer: one process or many, exact resume, periodic evaluation.

The loop is short on purpose: each iteration calls :meth:`Trainer.train_step` (losses from the
CoSA objective, backward, optimiser, EMA), then the bookkeeping steps (log, save, evaluate).

A step reads nothing off the device, so on a GPU the host queues the next step while the last
one runs. What the host must know of a step (its losses, whether it was finite) waits on the
device until the next bookkeeping, where :meth:`Trainer._settle` reads every step since in one go.

``last.pt`` is written before an evaluation due at the same iteration, so that a failure in the
evaluation (a bad mask, a kill) loses no training; resuming from such a checkpoint runs that
evaluation first, which keeps resumed runs exact (best.pt, the final metrics, the RNG stream).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from cosa.config.load import check_run_length, flat_keys, save_config
from cosa.config.schema import PSEUDO_LABEL_RECIPES, Config
from cosa.data.check import TrainingData, training_data
from cosa.data.datasets import StreamSampler, TrainingViews, per_process_batch
from cosa.data.fingerprint import differences, fingerprint
from cosa.engine import distributed
from cosa.engine.checkpoint import load_checkpoint, remove_partial_writes, save_checkpoint
from cosa.engine.distributed import DistContext, all_gather_cat, all_reduce_sum, average_buffers, barrier
from cosa.engine.evaluate import evaluate, format_results
from cosa.engine.graphs import GraphedForward
from cosa.engine.label_fit import LabelFit
from cosa.engine.monitor import CplMonitor
from cosa.engine.run_dir import claim, last_checkpoint
from cosa.engine.runlog import RunLog, setup_logging
from cosa.engine.schedule import build_optimizer, lr_factor, set_learning_rate
from cosa.errors import CosaError
from cosa.files import write_text_atomically
from cosa.method.cosa import CoSAObjective, StepLosses
from cosa.models.ema import ema_update
from cosa.models.network import build_network
from cosa.outputs import read_lock, refuse_inputs
from cosa.precision import autocast
from cosa.profiling import section, timed

log = logging.getLogger(__name__)
# DistributedDataParallel's switch that stops it broadcasting rank 0's buffers before every forward:
# torch 2.14 renamed it and warns on the old name (which still also skips the sync at start, a
# no-op here: every process builds the same network).
_NO_BUFFER_SYNC = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else "broadcast_buffers"
)


@dataclass
class StepRecord:
    """A step as the host needs to know it, left on the device until the next bookkeeping."""

    iteration: int
    names: list[str]  # the loss terms, then "total" and "gradients"
    values: torch.Tensor  # the loss terms and the total on this process
    nonfinite: torch.Tensor  # bool per name: not finite on some process
    skipped: torch.Tensor  # 0-dim bool: the step changed nothing


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

        checkpoint = self._resume_point() if resume else None
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
        self.threshold_history: list[torch.Tensor] = []  # this log interval's per-step thresholds
        self.pending: list[StepRecord] = []  # steps the host has not read yet
        self.loss_sums: dict[str, float] = {}  # this log interval's settled steps
        self.loss_count = 0
        # train.nonfinite=stop: set on the device by a fault, after which every step changes
        # nothing until the host stops the run; the faulty step's batch is kept for the report.
        self.halted = torch.zeros((), dtype=torch.bool, device=self.device)
        self.fault_batch: dict[str, torch.Tensor] | None = None
        self.monitor = CplMonitor(self.device) if self._monitors_cpl() else None
        self.label_fit = LabelFit(len(self.class_names), self.device)
        self.iteration = 0
        self.skipped_steps = 0
        self.best_miou = float("-inf")
        self.last_metrics: dict | None = None
        if checkpoint is not None:
            self._restore(checkpoint)
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

    def _monitors_cpl(self) -> bool:
        """Read training masks to score the pseudo-labels (monitoring only) when there are masks."""
        return (
            self.cfg.train.monitor_cpl and self.cfg.method.recipe in PSEUDO_LABEL_RECIPES and self.train_split.has_masks
        )

    @property
    def last_checkpoint(self) -> Path:
        return last_checkpoint(self.run_dir)

    def _resume_point(self) -> dict:
        """``last.pt``, once the temporary files of writes that the stop interrupted are gone."""
        if self.dist.is_main:
            remove_partial_writes(self.last_checkpoint.parent)
            remove_partial_writes(self.run_dir)
        return load_checkpoint(self.last_checkpoint)

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
            switch_on = self.iteration == self._switch_on_iteration()
            logging_due = self.iteration % cfg.log_every == 0 or last
            saving_due = self.iteration % cfg.checkpoint_every == 0 or last
            evaluation_due = self._evaluation_due()
            if switch_on or logging_due or saving_due or evaluation_due:
                self._settle()
            if switch_on or last:
                self._report_label_fit(last)
            if logging_due:
                seconds = (time.time() - started) / max(1, self.iteration - started_iteration)
                self._log_training(seconds, progress)
            if saving_due:
                self.save(self.last_checkpoint)
            if evaluation_due:
                self._evaluate()

    def _switch_on_iteration(self) -> int | None:
        """The last iteration before the pseudo-label losses count (the loss gate opens at the
        0-based step warm-up + 1); None for recipes without them."""
        if self.cfg.method.recipe not in PSEUDO_LABEL_RECIPES:
            return None
        return self.cfg.method.loss_warmup_iters + 1

    def _report_label_fit(self, last: bool) -> None:
        """Log how well the classifier fits the training tags, and warn when it is too early for
        the pseudo-label losses to switch on, or when it was still learning at the end (engine/label_fit.py)."""
        fit = self.label_fit.measure(self.iteration, all_gather_cat)
        if fit is None or not self.dist.is_main:
            return
        if not last and self.iteration % self.cfg.train.log_every:  # else the interval's log holds it
            self.runlog.write(self.iteration, {"fit/training_tags_map": fit.map})
        when = "the run ends" if last else "the pseudo-label losses switch on"
        tqdm.write(
            f"[{self.iteration}] {when}: the classifier fits the training tags at mAP {fit.map:.1f} "
            f"(chance {fit.chance:.1f})"
        )
        if last:
            warning = self.label_fit.end_warning(fit, self.iteration)
        else:
            warning = self.label_fit.switch_on_warning(fit, self.cfg.method.loss_warmup_iters)
        if warning:
            log.warning(warning)

    def _evaluation_due(self) -> bool:
        return self.iteration % self.cfg.train.eval_every == 0 or self.iteration == self.cfg.train.iterations

    def _build_network(self, pretrained: bool) -> nn.Module:
        return build_network(self.cfg.model, len(self.class_names), pretrained=pretrained).to(self.device)

    def train_step(self, batch: dict) -> StepLosses:
        """One optimiser step of the online network, then the EMA update of the assignment network.

        A step whose loss or gradients are not finite changes neither network: the optimiser, the
        BatchNorm statistics and the EMA leave them as they were, decided on the device; the host
        handles the fault (``train.nonfinite``) at the next bookkeeping.
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
        skip = timed("nonfinite_check", self._check_step, batch, losses)
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
        self._record(batch, losses, skip)
        return losses

    def _check_step(self, batch: dict, losses: StepLosses) -> torch.Tensor:
        """Whether the step must change nothing: a 0-dim bool on the device, the same on every process.

        A non-finite loss term is a fault, and so are non-finite gradients, except with fp16, where
        overflowing gradients are how the gradient scaler finds its scale (the step is skipped
        without a fault). The step is recorded for :meth:`_settle`.
        """
        values = torch.stack([*losses.terms.values(), losses.total]).detach().float()
        grads = [p.grad for p in self.online.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else values.new_zeros(())
        nonfinite = all_reduce_sum((~torch.isfinite(torch.cat([values, norm.float()[None]]))).float()) > 0
        overflow = nonfinite[-1]
        if self.scaler.is_enabled():
            nonfinite = torch.cat([nonfinite[:-1], torch.zeros_like(nonfinite[-1:])])
        fault = nonfinite.any()
        skip = fault | overflow | self.halted
        if self.cfg.train.nonfinite == "stop":
            first = fault & ~self.halted
            self.fault_batch = {
                key: value if self.fault_batch is None else torch.where(first, value, self.fault_batch[key])
                for key, value in batch.items()
            }
            self.halted = self.halted | fault
        names = [*losses.terms, "total", "gradients"]
        self.pending.append(StepRecord(self.iteration, names, values, nonfinite, skip))
        return skip

    def _settle(self) -> None:
        """Read the steps since the last bookkeeping off the device (the host's one wait for it):
        add them to the log interval's means, and handle their faults as ``train.nonfinite`` says."""
        if not self.pending:
            return
        records, self.pending = self.pending, []
        values = (all_reduce_sum(torch.stack([record.values for record in records])) / self.dist.world_size).tolist()
        nonfinite = torch.stack([record.nonfinite for record in records]).tolist()
        skipped = torch.stack([record.skipped for record in records]).tolist()
        for record, step_values, step_nonfinite, step_skipped in zip(records, values, nonfinite, skipped):
            faults = [name for name, flag in zip(record.names, step_nonfinite) if flag]
            if faults:
                self._handle_nonfinite(record, dict(zip(record.names, step_values)), faults)
            if not step_skipped:
                for name, value in zip(["loss", *record.names[:-2]], [step_values[-1], *step_values[:-1]]):
                    self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value
                self.loss_count += 1

    def _handle_nonfinite(self, record: StepRecord, values: dict[str, float], faults: list[str]) -> None:
        terms = ", ".join(f"{name}={values[name]:g}" for name in faults if name in record.names[:-2])
        what = f"step {record.iteration}: non-finite {', '.join(faults)}" + (f" ({terms})" if terms else "")
        if self.cfg.train.nonfinite == "skip":
            self.skipped_steps += 1
            log.warning("%s; step skipped, networks unchanged (%d skipped so far)", what, self.skipped_steps)
            return
        # Every step from the fault on changed nothing: the networks, optimiser and thresholds are
        # those before it. With the batch, this file replays it (load it like last.pt).
        path = self.run_dir / "nonfinite" / f"step{record.iteration}.pt"
        payload = {
            **self.checkpoint_payload(),
            "iteration": record.iteration - 1,
            "batch": {key: value.cpu() for key, value in self.fault_batch.items()},
        }
        if self.dist.is_main:
            save_checkpoint(path, payload)
        barrier()
        raise CosaError(
            f"{what}; saved the state before it and its batch to {path} (train.nonfinite=skip skips such steps)"
        )

    def _record(self, batch: dict, losses: StepLosses, skip: torch.Tensor) -> None:
        """Keep this step's class scores, thresholds and CPL counts on the device until the next log."""
        self.label_fit.update(losses.logits, batch["labels"], skip)
        if losses.assigned is None:
            return
        thresholds = self.objective.thresholds
        if thresholds.searching:
            self.threshold_history.append(
                torch.stack([thresholds.cam.high, thresholds.cam.low, thresholds.aux.high, thresholds.aux.low])
            )
        if self.monitor is not None:
            self.monitor.update(losses.assigned.cam, losses.cpl, batch["mask"], losses.inside, skip)

    def _loader(self) -> DataLoader:
        cfg = self.cfg
        views = TrainingViews(
            self.train_split,
            cfg.data.crop_size,
            tuple(cfg.data.scale_range),
            cfg.data.blur_probability,
            cfg.train.seed,
            with_masks=cfg.method.recipe == "supervised" or self.monitor is not None,
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

    def _log_training(self, seconds_per_step: float, progress: tqdm) -> None:
        # Every step of the interval may have been skipped (on every process alike): no means then.
        means = {f"train/{name}": total / self.loss_count for name, total in self.loss_sums.items()}
        self.loss_sums, self.loss_count = {}, 0
        means["train/lr"] = self.optimizer.param_groups[0]["lr"]
        means["train/seconds_per_step"] = seconds_per_step
        fit = self.label_fit.measure(self.iteration, all_gather_cat)
        if fit is not None:
            means["fit/training_tags_map"], means["fit/chance"] = fit.map, fit.chance
        if self.skipped_steps:
            means["train/skipped_steps"] = self.skipped_steps
        if self.monitor is not None:
            means.update(self.monitor.summary(all_reduce_sum))
        if self.objective.thresholds.searching:
            self._write_thresholds()
        elif self.cfg.method.recipe in PSEUDO_LABEL_RECIPES:
            means.update({f"thresholds/{name}": value for name, value in self.objective.thresholds.values().items()})
        self.runlog.write(self.iteration, means)
        if "train/loss" in means:
            progress.set_postfix(loss=f"{means['train/loss']:.4f}", refresh=False)

    def _write_thresholds(self) -> None:
        """One record per step of the interval: searched thresholds are logged every step, synced once."""
        history = torch.stack(self.threshold_history).tolist() if self.threshold_history else []
        first = self.iteration - len(history) + 1
        for offset, values in enumerate(history):
            self.runlog.write(
                first + offset,
                {
                    f"thresholds/{name}": value
                    for name, value in zip(("cam_high", "cam_low", "aux_high", "aux_low"), values)
                },
            )
        self.threshold_history = []

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
        # Every number of the result, those a dataset adds (e.g. the synthetic data's coexistence) included.
        scalars = {f"val/{key}": value for key, value in result.items() if isinstance(value, float)}
        self.runlog.write(self.iteration, scalars)
        if self.dist.is_main:
            tqdm.write(
                f"[{self.iteration}] val mIoU unmasked {result['miou_unmasked']:.2f}, tag-masked "
                f"{result['miou_tag_masked']:.2f}, CAM {result['cam_miou']:.2f}, CPL {result['cpl_miou']:.2f}"
            )
        if result["miou_unmasked"] > self.best_miou:
            self.best_miou = result["miou_unmasked"]
            self.save(self.run_dir / "checkpoints" / "best.pt", full=False)

    def checkpoint_payload(self, full: bool = True) -> dict:
        payload = {
            "config": asdict(self.cfg),
            "class_names": list(self.class_names),
            "dataset": self.dataset,
            "iteration": self.iteration,
            "online": self.online.state_dict(),
            "assignment": self.assignment.state_dict(),
            "thresholds": self.objective.thresholds.state_dict(),
            "label_fit": self.label_fit.state_dict(),
            "best_miou": self.best_miou,
            "skipped_steps": self.skipped_steps,
            "metrics": self.last_metrics,
        }
        if full:
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scaler=self.scaler.state_dict(),
                rng={
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                },
            )
        return payload

    def save(self, path: Path, full: bool = True) -> None:
        if self.dist.is_main:
            save_checkpoint(path, self.checkpoint_payload(full))
        barrier()

    def _restore(self, checkpoint: dict) -> None:
        if "optimizer" not in checkpoint or "dataset" not in checkpoint:
            raise CosaError(f"{self.last_checkpoint}: holds weights only; cannot resume from it")
        moved = differences(checkpoint["dataset"], self.dataset)
        if moved:
            raise CosaError(
                f"{self.train_split.root}: not the dataset this run trained on ({moved}); "
                "resume with --data naming that dataset"
            )
        self.online.load_state_dict(checkpoint["online"])
        self.assignment.load_state_dict(checkpoint["assignment"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.objective.thresholds.load_state_dict(checkpoint["thresholds"])
        if "label_fit" in checkpoint:  # absent from checkpoints written before the fit was measured
            self.label_fit.load_state_dict(checkpoint["label_fit"])
        self.iteration = int(checkpoint["iteration"])
        if self.iteration >= self.cfg.train.iterations and (self.run_dir / "final_metrics.json").is_file():
            raise CosaError(
                f"{self.run_dir}: the run finished at iteration {self.iteration} (final_metrics.json); raise "
                "train.iterations to continue it, or evaluate it again with cosa evaluate"
            )
        self.best_miou = float(checkpoint["best_miou"])
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        self.last_metrics = checkpoint.get("metrics")
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        log.info("resumed from %s at iteration %d", self.last_checkpoint, self.iteration)
        stored, now = flat_keys(checkpoint["config"]), flat_keys(asdict(self.cfg))
        changed = [f"{key} ({stored[key]} → {now[key]})" for key in now if stored.get(key) != now[key]]
        if changed:
            log.info("changed since the checkpoint: %s", ", ".join(changed))


def with_absolute_root(cfg: Config, resume: bool) -> Config:
    """``cfg`` with its dataset as an absolute path, so that the run can be resumed, evaluated and
    its predictions made from any folder."""
    if cfg.data.root is None:
        raise CosaError("no dataset: pass --data ROOT (or set data.root)")
    root = Path(cfg.data.root).expanduser()
    if resume and not root.exists():
        raise CosaError(f"{root}: the run's dataset is not there; if it moved, resume with --data NEW_PATH")
    return replace(cfg, data=replace(cfg.data, root=str(root.absolute())))


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
