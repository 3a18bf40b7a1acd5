"""Speed of one training configuration: where a step's time goes, its compute floor, memory, inference.

    python benchmarks/speed.py voc --data DATA [--recipe R] [--steps 20] [--warmup 3] [--profile-steps 5]
                               [--device auto|cpu|cuda] [--infer-size N] [--infer-batch N] [--infer-batches 5]
                               [--label L] [--out JSON] [key=value ...]

One configuration (preset or YAML file, recipe, ``key=value`` overrides) per invocation, all in one
process: a :class:`Trainer` in a temporary run directory, fed by its own data loader, runs
--warmup + --steps + --profile-steps real ``Trainer.train_step`` calls. Times come from
``time.perf_counter()``, with ``torch.cuda.synchronize`` before and after each timed call on CUDA.

- **step**: wall time of ``train_step`` over the --steps measured, un-profiled steps, each timed
  on its own (the device idle before it).
- **pipelined step**: --steps further steps run back to back on batches loaded beforehand, timed
  together, divided by their number: training's pace where the host queues a step while the
  device runs the last one (on a CPU the same as **step**).
- **data wait**: time blocked in ``next()`` on the loader's iterator before each of those steps
  (with ``data.num_workers=0`` that is the loading itself); its share is wait / (wait + step).
- **compute floor**: after each warm-up and measured step (so that machine noise hits both
  alike), on the same batch, with the trainer's own networks and fp32 whatever ``train.amp``
  says: the forwards of the assignment network that ``multiscale_assignments`` runs (each of
  ``method.assignment_scales``, the weak view resized as there, concatenated with its horizontal
  flip, under ``no_grad``, nothing merged), then the online network's forward on the strong view
  (in train mode, so BatchNorm statistics move as in a step) and the backward of the sum of its
  output tensors' means, then ``zero_grad``; no optimiser step. The ratio step / floor (of the
  medians) is what the method adds to the bare networks.
- **phases**: --profile-steps further steps, each under ``torch.profiler.profile`` (which adds
  overhead, hence separate steps), aggregated over the step's ``cosa/...`` ranges
  (:mod:`cosa.profiling`): per range its CPU wall time (summed when it occurs more than once in
  a step, 0 in a step without it), the innermost enclosing ``cosa/...`` range as ``parent``,
  and on CUDA its device time: the summed durations of the kernels of every op that started
  while the range was open (so the kernels that autograd's device thread launches count in
  ``cosa/backward``). ``other`` is the profiled step's wall time minus its top-level ranges.
  Shares are sums over the profiled steps divided by the sum of their step times; ranges that
  no profiled step has are absent.
- **memory**: the process's peak RSS (``ru_maxrss``: process-wide and monotonic, so it covers
  everything up to the moment read, model building and the floor steps included), read after
  the measured steps and at the end; on CUDA the most ``max_memory_allocated`` of any measured
  step and of any floor step, reset before each.
- **inference**: images/s of the trained assignment network through ``cosa.engine.inference.infer``
  (what ``cosa evaluate`` calls) on a seeded N(0, 1) batch of --infer-batch × 3 × --infer-size²
  (defaults ``eval.batch_size`` and ``eval.size``), under ``eval.amp``, timed over --infer-batches
  batches after two warm-up batches: single scale without flip, and the ``eval.scales`` (+ flip)
  protocol. ``--infer-batches 0`` leaves it out.

Medians and means are in milliseconds. Writes JSON (default benchmarks/results/speed-LABEL.json)
and prints one Markdown table row per measured quantity.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from common import environment
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile

from cosa.config import load_config
from cosa.config.schema import Config
from cosa.engine.distributed import DistContext, resolve_device
from cosa.engine.inference import infer
from cosa.engine.trainer import Trainer
from cosa.method.pseudo_labels import resize

PREFIX = "cosa/"
MIB = 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function: Callable[[], object]) -> float:
    """Seconds ``function()`` takes, the device's queued work included."""
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def timed_with_peak(device: torch.device, function: Callable[[], object], peaks: list[int]) -> float:
    """:func:`timed`, appending on CUDA the peak bytes allocated during the call to ``peaks``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(device, function)
    if device.type == "cuda":
        peaks.append(torch.cuda.max_memory_allocated(device))
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    return {"median": 1000 * statistics.median(seconds), "mean": 1000 * statistics.fmean(seconds)}


def floor_step(trainer: Trainer, batch: dict) -> None:
    """The networks' own work in a step, fp32 (the module docstring defines it)."""
    weak = batch["weak"].to(trainer.device, non_blocking=True)
    strong = batch["strong"].to(trainer.device, non_blocking=True)
    height, width = weak.shape[-2:]
    with torch.no_grad():
        for scale in trainer.cfg.method.assignment_scales:
            scaled = resize(weak, (int(height * scale), int(width * scale)))
            trainer.assignment(torch.cat([scaled, scaled.flip(-1)]))
    output = trainer.online(strong)
    sum(tensor.float().mean() for tensor in vars(output).values()).backward()
    trainer.online.zero_grad(set_to_none=True)


def step_ranges(events: list[FunctionEvent]) -> dict[str, dict]:
    """The step's ``cosa/...`` ranges by name: CPU and device seconds, and the enclosing range's name."""
    ranges = [e for e in events if e.name.startswith(PREFIX) and e.device_type == DeviceType.CPU]

    def enclosing(start: float, end: float, exclude: FunctionEvent | None = None) -> list[FunctionEvent]:
        return [r for r in ranges if r is not exclude and r.time_range.start <= start and end <= r.time_range.end]

    result: dict[str, dict] = {}
    for event in ranges:
        outer = enclosing(event.time_range.start, event.time_range.end, event)
        parent = max(outer, key=lambda r: (r.time_range.start, -r.time_range.end)).name if outer else None
        entry = result.setdefault(event.name, {"cpu": 0.0, "device": 0.0, "parent": parent})
        entry["cpu"] += event.cpu_time_total / 1e6
    # A kernel belongs to the op (or range) that launched it; time, not the op tree, says which
    # ranges were open then, because on CUDA the backward's ops run on autograd's own thread.
    for op in events:
        if op.device_type == DeviceType.CPU and op.self_device_time_total > 0:
            for event in enclosing(op.time_range.start, op.time_range.start):
                result[event.name]["device"] += op.self_device_time_total / 1e6
    return result


def phases(profiled: list[tuple[float, dict[str, dict]]], cuda: bool) -> dict[str, dict]:
    """Per range over the profiled steps (0 in a step that lacks it), then ``other``."""
    total = sum(seconds for seconds, _ in profiled)
    names = list(dict.fromkeys(name for _, ranges in profiled for name in ranges))
    result: dict[str, dict] = {}
    for name in names:
        cpu = [ranges[name]["cpu"] if name in ranges else 0.0 for _, ranges in profiled]
        parent = next(ranges[name]["parent"] for _, ranges in profiled if name in ranges)
        result[name] = {"parent": parent, "cpu_ms": summary(cpu), "share_pct": 100 * sum(cpu) / total}
        if cuda:
            result[name]["device_ms"] = summary(
                [ranges[name]["device"] if name in ranges else 0.0 for _, ranges in profiled]
            )
    other = [seconds - sum(r["cpu"] for r in ranges.values() if r["parent"] is None) for seconds, ranges in profiled]
    result["other"] = {"parent": None, "cpu_ms": summary(other), "share_pct": 100 * sum(other) / total}
    return result


def throughput(
    network: torch.nn.Module, inputs: torch.Tensor, scales: list[float], flip: bool, amp: str, batches: int
) -> dict:
    """Images/s of ``infer`` on ``inputs``, after two warm-up batches."""

    def run() -> None:
        infer(network, inputs, scales, flip, amp)

    for _ in range(2):
        run()
    seconds = [timed(inputs.device, run) for _ in range(batches)]
    return {
        "scales": scales,
        "flip": flip,
        "ms_per_batch": summary(seconds),
        "images_per_s": len(inputs) * batches / sum(seconds),
    }


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def table(label: str, result: dict) -> list[str]:
    """One Markdown row per quantity: label, quantity, median, mean, share of the step."""

    def row(quantity: str, median: float, mean: float | None = None, share: float | None = None) -> str:
        cells = [f"{median:.4g}", "" if mean is None else f"{mean:.4g}", "" if share is None else f"{share:.1f}%"]
        return f"| {label} | {quantity} | " + " | ".join(cells) + " |"

    rows = [
        row("step (ms)", **result["step_ms"]),
        row("pipelined step (ms)", result["pipelined_step_ms"]),
        row("compute floor (ms)", **result["floor_ms"]),
        row("step / floor", result["step_over_floor"]),
        row("data wait (ms)", **result["data_wait_ms"], share=result["data_wait_share_pct"]),
        row("profiled step (ms)", **result["profiled_step_ms"]),
    ]
    for name, phase in result["phases"].items():
        where = f" in {phase['parent']}" if phase["parent"] else ""
        rows.append(row(f"{name}{where} (CPU ms)", **phase["cpu_ms"], share=phase["share_pct"]))
        if "device_ms" in phase:
            rows.append(row(f"{name}{where} (device ms)", **phase["device_ms"]))
    rows += [row(f"memory: {key}", value) for key, value in result["memory"].items() if value is not None]
    rows += [
        row(f"inference {name} (images/s)", result["inference"][name]["images_per_s"])
        for name in ("single_scale", "eval_protocol")
        if name in result["inference"]
    ]
    return ["| config | quantity | median | mean | share of step |", "|---|---|---|---|---|", *rows]


def measure(
    cfg: Config,
    steps: int = 20,
    warmup: int = 3,
    profile_steps: int = 5,
    infer_size: int | None = None,
    infer_batch: int | None = None,
    infer_batches: int = 5,
) -> dict:
    """The measurements of the module docstring for ``cfg`` (its ``train.iterations`` at least the
    steps run), in a temporary run directory."""
    device = resolve_device(cfg.train.device)
    cuda = device.type == "cuda"
    steps_ms, floors, waits, step_peaks, floor_peaks, profiled = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir, DistContext(0, 1, 0, device))
        loader = iter(trainer._loader())

        def next_batch() -> tuple[dict, float]:
            started = time.perf_counter()
            batch = next(loader)
            trainer.iteration += 1  # as the trainer's loop does, for the schedules
            return batch, time.perf_counter() - started

        for index in range(warmup + steps):
            batch, wait = next_batch()
            seconds = timed_with_peak(device, partial(trainer.train_step, batch), step_peaks)
            floor = timed_with_peak(device, partial(floor_step, trainer, batch), floor_peaks)
            if index >= warmup:
                steps_ms.append(seconds)
                floors.append(floor)
                waits.append(wait)
        rss_after_steps = peak_rss_mib()

        batches = [next_batch()[0] for _ in range(steps)]
        trainer.iteration -= steps

        def back_to_back() -> None:
            for batch in batches:
                trainer.iteration += 1
                trainer.train_step(batch)

        pipelined = timed(device, back_to_back) / steps

        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        for _ in range(profile_steps):
            batch, _ = next_batch()
            with profile(activities=activities) as profiler:
                seconds = timed(device, partial(trainer.train_step, batch))
            profiled.append((seconds, step_ranges(list(profiler.events()))))

        size, batch_size = infer_size or cfg.eval.size, infer_batch or cfg.eval.batch_size
        inference = {"size": size, "batch": batch_size, "amp": cfg.eval.amp}
        if infer_batches:
            generator = torch.Generator().manual_seed(cfg.train.seed)
            inputs = torch.randn(batch_size, 3, size, size, generator=generator).to(device)
            network, amp = trainer.assignment, cfg.eval.amp
            inference["single_scale"] = throughput(network, inputs, [1.0], False, amp, infer_batches)
            inference["eval_protocol"] = throughput(
                network, inputs, list(cfg.eval.scales), cfg.eval.flip, amp, infer_batches
            )

    return {
        "counts": {"warmup": warmup, "measured": len(steps_ms), "profiled": len(profiled)},
        "step_ms": summary(steps_ms),
        "pipelined_step_ms": 1000 * pipelined,
        "floor_ms": summary(floors),
        "step_over_floor": statistics.median(steps_ms) / statistics.median(floors),
        "data_wait_ms": summary(waits),
        "data_wait_share_pct": 100 * sum(waits) / (sum(waits) + sum(steps_ms)),
        "profiled_step_ms": summary([seconds for seconds, _ in profiled]),
        "phases": phases(profiled, cuda),
        "memory": {
            "rss_peak_after_steps_mib": rss_after_steps,
            "rss_peak_at_end_mib": peak_rss_mib(),
            "cuda_step_peak_mib": max(step_peaks[warmup:]) / MIB if cuda else None,
            "cuda_floor_peak_mib": max(floor_peaks[warmup:]) / MIB if cuda else None,
        },
        "inference": inference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--data", required=True)
    parser.add_argument("--recipe", help="default: the preset's (or method.recipe=)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="sets train.device")
    parser.add_argument("--infer-size", type=int, help="default eval.size")
    parser.add_argument("--infer-batch", type=int, help="default eval.batch_size")
    parser.add_argument("--infer-batches", type=int, default=5)
    parser.add_argument("--label", help="default BACKBONE-cropCROP-bBATCH[-AMP]")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/speed-LABEL.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    if min(args.steps, args.profile_steps) < 1 or min(args.warmup, args.infer_batches) < 0:
        parser.error("--steps and --profile-steps must be positive, --warmup and --infer-batches not negative")

    total = args.warmup + 2 * args.steps + args.profile_steps
    device_override = [f"train.device={args.device}"] if args.device else []
    cfg = load_config(
        args.preset, args.recipe, args.data, [*args.overrides, *device_override, f"train.iterations={total}"]
    )
    label = args.label or re.sub(
        r"[^\w.-]",
        "_",
        f"{cfg.model.backbone.split('.')[0]}-crop{cfg.data.crop_size}"
        f"-b{cfg.train.batch_size}" + ("" if cfg.train.amp == "none" else f"-{cfg.train.amp}"),
    )
    out = Path(args.out or f"benchmarks/results/speed-{label}.json")
    measured = measure(
        cfg, args.steps, args.warmup, args.profile_steps, args.infer_size, args.infer_batch, args.infer_batches
    )
    result = {
        **environment(),
        "label": label,
        "preset": args.preset,
        "recipe": cfg.method.recipe,
        "overrides": args.overrides,
        "config": configuration(cfg),
        **measured,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\n".join(table(label, result)))
    print(f"wrote {out}")


def configuration(cfg: Config) -> dict:
    """The settings that decide a configuration's speed."""
    return {
        "backbone": cfg.model.backbone,
        "crop_size": cfg.data.crop_size,
        "batch_size": cfg.train.batch_size,
        "amp": cfg.train.amp,
        "assignment_amp": cfg.train.assignment_amp,
        "assignment_scales": list(cfg.method.assignment_scales),
        "eval_scales": list(cfg.eval.scales),
        "eval_flip": cfg.eval.flip,
        "num_workers": cfg.data.num_workers,
        "device": str(resolve_device(cfg.train.device)),
    }


if __name__ == "__main__":
    main()
