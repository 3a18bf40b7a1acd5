"""What a run tells as it goes, beside the loop of engine/trainer.py: each log interval's loss
means, the CPL thresholds, how well the classifier fits the training tags (engine/label_fit.py),
the evaluations and, when the training split has masks, the quality of the CAM pseudo-labels.

A step leaves all of it on the device (:meth:`TrainingMonitor.record`); the host reads the steps
since the last bookkeeping in one go (:meth:`TrainingMonitor.settle`), so that on a GPU it can
queue the next step while the last one runs.

The pseudo-label quality (:class:`CplMonitor`) reads the training masks for monitoring only; no
loss sees them (except the ``supervised`` recipe's). Per step, on the device, it counts:

- CPL precision (correct among the pixels the CPL labels) and recall (correct among all valid
  pixels) — how much the ignore band trades coverage for accuracy;
- by AN confidence m(i) = max_c M_c(i) in ten bins: how often the strongest class is the true
  label and how often the truth is background — the paper's Fig. 3 analysis, which shows where
  the thresholds should sit and how that drifts during training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from tqdm import tqdm

from cosa.config.schema import PSEUDO_LABEL_RECIPES, Config
from cosa.data.io import IGNORE_INDEX
from cosa.engine.distributed import all_gather_cat, all_reduce_sum
from cosa.engine.faults import Fault, StepRecord
from cosa.engine.inference import protocol_text
from cosa.engine.label_fit import LabelFit
from cosa.engine.runlog import RunLog
from cosa.method.cosa import StepLosses
from cosa.method.thresholds import CplThresholds

log = logging.getLogger(__name__)
BINS = 10
THRESHOLD_NAMES = ("cam_high", "cam_low", "aux_high", "aux_low")


class TrainingMonitor:
    """The steps since the last log, kept on the device, and what the run's log says of them."""

    def __init__(self, cfg: Config, num_classes: int, device: torch.device, is_main: bool, masks: bool) -> None:
        """``masks``: whether the training split has masks, which the CPL quality needs."""
        self.cfg = cfg
        self.is_main = is_main
        self.pseudo_labels = cfg.method.recipe in PSEUDO_LABEL_RECIPES
        self.label_fit = LabelFit(num_classes, device)
        self.cpl = CplMonitor(device) if masks and cfg.train.monitor_cpl and self.pseudo_labels else None
        self.pending: list[StepRecord] = []  # steps the host has not read yet
        self.threshold_history: list[torch.Tensor] = []  # this interval's searched thresholds, per step
        self.loss_sums: dict[str, float] = {}  # this interval's settled steps that changed the networks
        self.loss_count = 0

    @property
    def switch_on_iteration(self) -> int | None:
        """The last iteration before the pseudo-label losses count (the loss gate opens at the
        0-based step warm-up + 1); None for recipes without them."""
        return self.cfg.method.loss_warmup_iters + 1 if self.pseudo_labels else None

    def record(self, step: StepRecord, losses: StepLosses, batch: dict, thresholds: CplThresholds) -> None:
        """Keep a step's losses, class scores, thresholds and CPL counts on the device."""
        self.pending.append(step)
        self.label_fit.update(losses.logits, batch["labels"], step.skipped)
        if losses.assigned is None:
            return
        if thresholds.searching:
            self.threshold_history.append(
                torch.stack([thresholds.cam.high, thresholds.cam.low, thresholds.aux.high, thresholds.aux.low])
            )
        if self.cpl is not None:
            self.cpl.update(losses.assigned.cam, losses.cpl, batch["mask"], losses.inside, step.skipped)

    def settle(self, world_size: int) -> list[Fault]:
        """Read the pending steps off the device (the host's one wait for it), add those that changed
        the networks to the interval's means, and return the faults among them, in step order."""
        if not self.pending:
            return []
        records, self.pending = self.pending, []
        values = (all_reduce_sum(torch.stack([record.values for record in records])) / world_size).tolist()
        nonfinite = torch.stack([record.nonfinite for record in records]).tolist()
        skipped = torch.stack([record.skipped for record in records]).tolist()
        faults = []
        for record, step_values, step_nonfinite, step_skipped in zip(records, values, nonfinite, skipped):
            *terms, total = step_values
            named = dict(zip(record.names, terms))
            failed = [name for name, flag in zip(record.names, step_nonfinite) if flag]
            if failed:
                faults.append(Fault(record.iteration, failed, {name: named[name] for name in failed if name in named}))
            if not step_skipped:
                for name, value in {"loss": total, **named}.items():
                    self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value
                self.loss_count += 1
        return faults

    def write_log(
        self,
        runlog: RunLog,
        iteration: int,
        thresholds: CplThresholds,
        learning_rate: float,
        seconds_per_step: float,
        skipped_steps: int,
    ) -> dict[str, float]:
        """Write the interval's record to ``runlog`` and start the next interval; returns the record.

        Searched thresholds get a record per step of the interval, as they move every step.
        """
        # Every step of the interval may have been skipped (on every process alike): no means then.
        means = {f"train/{name}": total / self.loss_count for name, total in self.loss_sums.items()}
        self.loss_sums, self.loss_count = {}, 0
        means["train/lr"] = learning_rate
        means["train/seconds_per_step"] = seconds_per_step
        fit = self.label_fit.measure(iteration, all_gather_cat)
        if fit is not None:
            means["fit/training_tags_map"], means["fit/chance"] = fit.map, fit.chance
        if skipped_steps:
            means["train/skipped_steps"] = skipped_steps
        if self.cpl is not None:
            means.update(self.cpl.summary(all_reduce_sum))
        if thresholds.searching:
            history = torch.stack(self.threshold_history).tolist() if self.threshold_history else []
            self.threshold_history = []
            first = iteration - len(history) + 1
            for offset, step_values in enumerate(history):
                runlog.write(first + offset, {f"thresholds/{n}": v for n, v in zip(THRESHOLD_NAMES, step_values)})
        elif self.pseudo_labels:
            means.update({f"thresholds/{name}": value for name, value in thresholds.values().items()})
        runlog.write(iteration, means)
        return means

    def write_evaluation(self, runlog: RunLog, iteration: int, result: dict) -> None:
        """Log every number of an evaluation, those a dataset adds (e.g. the synthetic data's
        coexistence) included, and show the mIoUs."""
        runlog.write(iteration, {f"val/{key}": value for key, value in result.items() if isinstance(value, float)})
        if self.is_main:
            tqdm.write(
                f"[{iteration}] val mIoU unmasked {result['miou_unmasked']:.2f}, tag-masked "
                f"{result['miou_tag_masked']:.2f}, CAM {result['cam_miou']:.2f}, CPL {result['cpl_miou']:.2f} "
                f"({protocol_text(result['protocol'])})"
            )

    def report_label_fit(self, runlog: RunLog, iteration: int, last: bool) -> None:
        """Log how well the classifier fits the training tags, and warn when it is too early for
        the pseudo-label losses to switch on, or when it was still learning at the end."""
        fit = self.label_fit.measure(iteration, all_gather_cat)
        if fit is None or not self.is_main:
            return
        if not last and iteration % self.cfg.train.log_every:  # else the interval's record holds it
            runlog.write(iteration, {"fit/training_tags_map": fit.map})
        when = "the run ends" if last else "the pseudo-label losses switch on"
        tqdm.write(
            f"[{iteration}] {when}: the classifier fits the training tags at mAP {fit.map:.1f} "
            f"(chance {fit.chance:.1f})"
        )
        if last:
            warning = self.label_fit.end_warning(fit, iteration)
        else:
            warning = self.label_fit.switch_on_warning(fit, self.cfg.method.loss_warmup_iters)
        if warning:
            log.warning(warning)


class CplMonitor:
    """The CAM pseudo-labels' quality against the training masks; :meth:`summary` returns the counts
    accumulated since its last call as plain numbers (one host sync)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.pixels = torch.zeros(3, dtype=torch.float64, device=self.device)  # correct, labelled, valid
        self.bins = torch.zeros(3, BINS, dtype=torch.float64, device=self.device)  # count, fg right, bg truth

    @torch.no_grad()
    def update(
        self,
        cams: torch.Tensor,
        cpl: torch.Tensor,
        mask: torch.Tensor,
        inside: torch.Tensor,
        skip: torch.Tensor | None = None,
    ) -> None:
        """``cams``: the AN's normalised CAMs M (B×C×H×W); ``cpl``, ``mask``, ``inside``: B×H×W;
        ``skip``: a 0-dim bool tensor, true for a step that counts nothing."""
        valid = (mask != IGNORE_INDEX) & inside
        if skip is not None:
            valid = valid & ~skip
        labelled = valid & (cpl != IGNORE_INDEX)
        self.pixels += torch.stack([(labelled & (cpl == mask)).sum(), labelled.sum(), valid.sum()]).double()

        confidence, strongest = cams.max(dim=1)
        # Every pixel is counted into its bin with weight 0 when invalid: selecting the valid
        # pixels first would make the GPU wait for their number.
        index = (confidence * BINS).long().clamp(0, BINS - 1).flatten()
        for row, hits in enumerate((valid, valid & (strongest + 1 == mask), valid & (mask == 0))):
            self.bins[row].scatter_add_(0, index, hits.flatten().double())

    def summary(self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda counts: counts) -> dict[str, float]:
        """Percentages since the last call; ``reduce`` sums the counts over processes."""
        correct, labelled, valid = reduce(self.pixels).tolist()
        counts, foreground_right, background_truth = reduce(self.bins).tolist()
        values = {}
        if valid:
            values["cpl/precision"] = 100 * correct / max(labelled, 1)
            values["cpl/recall"] = 100 * correct / valid
        for i in range(BINS):
            if counts[i]:
                values[f"cpl_bins/strongest_class_right_{i}"] = 100 * foreground_right[i] / counts[i]
                values[f"cpl_bins/background_truth_{i}"] = 100 * background_truth[i] / counts[i]
                values[f"cpl_bins/pixels_{i}"] = counts[i]
        self._reset()
        return values
