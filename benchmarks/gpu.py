"""cosa on a GPU in one command: the CUDA tests, the voc training step's speed and memory, the VOC
evaluation protocol's throughput and a short demo training; one JSON.

    python benchmarks/gpu.py [--out JSON] [--budget SECONDS] [--device cuda|cpu] [--tiny]
    python benchmarks/gpu.py --table JSON           (the Markdown tables of a report)

``--tiny`` runs every section at toy sizes (with ``--device cpu``: a check of this script where
there is no GPU). The sections run in this order; each is recorded even when an earlier one
failed (with its error), and those whose turn comes after --budget seconds are recorded as
skipped. The JSON is rewritten after each section.

1. **machine**: ``nvidia-smi``'s view, and this device's ceilings measured here: the median rate
   of an 8192³ matrix product in bf16 and in fp32 (TFLOP/s) and a 4 GiB device-to-device copy
   (GB/s, bytes read plus written).
2. **tests**: ``pytest -m cuda`` in a subprocess (the fixture cases on the GPU and
   tests/engine/test_gpu.py), while 3 runs: counts, and per test its outcome, seconds and the
   properties it records (differing pixels, bf16 distances, synchronisations).
3. **demo**: the synthetic dataset as ``make demo`` makes it, the demo preset trained for 200
   steps on the device: the assignment network's mIoU before and after (the preset's evaluation).
4. **training step**: the ``voc`` preset (ViT-B/16 at random weights, crop 448, 4 images per
   step, ``release``) through ``benchmarks/speed.py``'s ``measure`` for each precision variant:
   milliseconds per step alone and back to back, images per second, peak memory, and the
   profiler's device time per phase. Its FLOPs (``torch.utils.flop_counter``, one fp32 step) over
   the measured rates give the compute floor.
5. **evaluation**: ``cosa.engine.evaluate.evaluate`` of the VOC protocol (448², five scales with
   flips) on 500×375 images with masks, in fp32 and bf16: images per second after a warm-up, the
   projected seconds for VOC val's 1,449 images; and, on the demo's trained network and
   validation images, bf16 against fp32 (pixels that change label, mIoU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import environment
from PIL import Image
from speed import configuration, measure

from cosa.config import load_config
from cosa.config.schema import Config
from cosa.data.datasets import EvaluationImages, collate_evaluation
from cosa.data.io import write_mask
from cosa.data.layouts import load_split
from cosa.data.synthetic import generate_synthetic_dataset
from cosa.engine.distributed import DistContext
from cosa.engine.evaluate import evaluate
from cosa.engine.inference import infer, segmentation_labels
from cosa.engine.trainer import Trainer
from cosa.method.thresholds import CplThresholds
from cosa.models.network import build_network

ROOT = Path(__file__).resolve().parents[1]
VOC_VAL_IMAGES = 1449
VOC_CLASSES = 20
# The training step's variants: (label, overrides).
STEP_VARIANTS = [
    ("fp32", ["train.amp=none"]),
    ("bf16", ["train.amp=bf16"]),
    ("fp32, bf16 assignment pass", ["train.amp=none", "train.assignment_amp=bf16"]),
    ("fp16", ["train.amp=fp16"]),
]


class Report:
    """The JSON, rewritten after every section; sections run in order within the time budget."""

    def __init__(self, path: Path, budget: float) -> None:
        self.path, self.deadline = path, time.monotonic() + budget
        self.data = {**environment(), "sections": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, function: Callable[[], dict], needs: float = 0.0) -> dict | None:
        if self.left() < needs:
            self.data["sections"][name] = {"skipped": f"{self.left():.0f} s of the budget left, {needs:.0f} needed"}
            self.write()
            return None
        started = time.monotonic()
        try:
            result = function()
        except Exception as error:  # recorded, and the next section runs
            result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
        result["seconds"] = round(time.monotonic() - started, 1)
        self.data["sections"][name] = result
        self.write()
        print(f"[{name}] {result['seconds']} s{' ERROR ' + result['error'] if 'error' in result else ''}", flush=True)
        return result

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(device: torch.device, function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: kernels chosen, memory allocated
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def machine(device: torch.device, size: int) -> dict:
    result = {}
    if device.type == "cuda":
        query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,temperature.gpu"
        smi = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True
        )
        result["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        result["torch_cuda"] = torch.version.cuda
    for dtype in (torch.bfloat16, torch.float32):
        a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
        seconds = median_seconds(device, lambda a=a, b=b: a @ b, 10)
        result[f"matmul_{str(dtype).split('.')[-1]}_tflops"] = 2 * size**3 / seconds / 1e12
    source = torch.randn(2**30 if device.type == "cuda" else 2**22, device=device)  # 4 GiB on a GPU
    target = torch.empty_like(source)
    seconds = median_seconds(device, lambda: target.copy_(source), 10)
    result["copy_gb_per_s"] = 2 * source.numel() * 4 / seconds / 1e9
    return result


def run_tests(out: Path, tiny: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={out}"]
    command += ["-n", "2" if tiny else "4", str(ROOT / "tests")]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_results(process: subprocess.Popen, junit: Path, timeout: float) -> dict:
    try:
        output, _ = process.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return {"error": f"pytest ran past {timeout:.0f} s", "output_tail": output[-3000:]}
    tests = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        entry = {
            "name": f"{case.get('classname')}::{case.get('name')}",
            "outcome": outcome,
            "seconds": case.get("time"),
        }
        entry["properties"] = {p.get("name"): p.get("value") for p in case.iter("property")}
        if outcome in ("failure", "error"):
            entry["message"] = next(child for child in case if child.tag == outcome).get("message", "")[:2000]
        tests.append(entry)
    counts = {
        outcome: sum(t["outcome"] == outcome for t in tests) for outcome in ("passed", "failure", "error", "skipped")
    }
    return {"returncode": process.returncode, "counts": counts, "tests": tests, "output_tail": output[-3000:]}


def demo_training(data: Path, work: Path, device: torch.device, tiny: bool) -> dict:
    steps = 10 if tiny else 200
    overrides = [f"train.device={device.type}", f"train.iterations={steps}"]
    if tiny:
        overrides += ["model.pretrained=none", "data.crop_size=64", "eval.size=64", "eval.max_images=8"]
    cfg = load_config("demo", None, str(data), overrides)
    dist = DistContext(0, 1, 0, device)
    trainer = Trainer(cfg, work / "demo-run", dist)
    before = evaluate(
        trainer.assignment, trainer.val_split, cfg, trainer.objective.thresholds, dist, cfg.eval.max_images
    )
    started = time.perf_counter()
    after = trainer.fit()
    seconds = time.perf_counter() - started
    headline = ("miou_unmasked", "miou_tag_masked", "cam_miou")
    agreement = precision_agreement(trainer, cfg, device)
    return {
        "steps": steps,
        "train_seconds": seconds,
        "untrained": {key: before[key] for key in headline},
        "trained": {key: after[key] for key in headline},
        "improved": after["miou_unmasked"] > before["miou_unmasked"],
        "protocol": after["protocol"],
        "bf16_evaluation": agreement,
    }


def precision_agreement(trainer: Trainer, cfg: Config, device: torch.device) -> dict:
    """bf16 against fp32 evaluation of the trained demo network: label changes and mIoU."""
    network, split, dist = trainer.assignment.eval(), trainer.val_split, DistContext(0, 1, 0, device)
    miou, changed, pixels = {}, 0, 0
    for amp in ("none", "bf16"):
        cfg.eval.amp = amp
        miou[amp] = evaluate(network, split, cfg, trainer.objective.thresholds, dist, cfg.eval.max_images)[
            "miou_unmasked"
        ]
    cfg.eval.amp = "none"
    images = EvaluationImages(split, cfg.eval.size)
    count = min(len(images), cfg.eval.max_images or len(images))
    for start in range(0, count, cfg.eval.batch_size):
        batch = collate_evaluation([images[i] for i in range(start, min(start + cfg.eval.batch_size, count))])
        inputs = batch["input"].to(device)
        labels = [
            segmentation_labels(infer(network, inputs, cfg.eval.scales, cfg.eval.flip, amp).seg)
            for amp in ("none", "bf16")
        ]
        changed += int((labels[0] != labels[1]).sum())
        pixels += labels[0].numel()
    return {"miou_fp32": miou["none"], "miou_bf16": miou["bf16"], "changed_pixels_pct": 100 * changed / pixels}


def voc_like_dataset(root: Path, count: int, size: tuple[int, int]) -> Path:
    """``count`` photograph-like images of ``size`` (width, height) with masks in each of train and val."""
    rng = np.random.default_rng(0)
    width, height = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"class{i}\n" for i in range(1, VOC_CLASSES + 1)))
    for split in ("train", "val"):
        rows = ["image,labels"]
        for index in range(count):
            coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3)).astype(np.uint8)
            image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
            name = f"{split}{index:04d}"
            image.save(root / "images" / f"{name}.jpg", quality=90)
            classes = rng.choice(VOC_CLASSES, size=int(rng.integers(1, 4)), replace=False) + 1
            mask = np.zeros((height, width), dtype=np.uint8)
            for label in classes:
                top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
                mask[top : top + height // 3, left : left + width // 3] = label
            mask[:3] = 255
            write_mask(root / "masks" / f"{name}.png", torch.from_numpy(mask))
            rows.append(f"{name}.jpg,{';'.join(f'class{label}' for label in sorted(classes))}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def voc_config(data: Path, device: torch.device, tiny: bool, *extra: str) -> Config:
    overrides = ["model.pretrained=none", "data.train_split=train", f"train.device={device.type}"]
    if tiny:
        overrides += ["model.backbone=vit_tiny_patch16_224", "data.crop_size=64", "train.batch_size=2", "eval.size=64"]
    return load_config("voc", "release", str(data), [*overrides, *extra])


def training_step(data: Path, device: torch.device, tiny: bool, variant: list[str], rates: dict) -> dict:
    cfg = voc_config(data, device, tiny, *variant, "train.iterations=100")
    steps, warmup, profiled = (2, 1, 1) if tiny else (10, 3, 2)
    result = measure(cfg, steps=steps, warmup=warmup, profile_steps=profiled, infer_batches=0)
    result["config"] = configuration(cfg)
    result["images_per_s"] = 1000 * cfg.train.batch_size / result["pipelined_step_ms"]
    result["phases_ms"] = phase_medians(result.pop("phases"))
    rate = rates.get("matmul_float32_tflops" if cfg.train.amp == "none" else "matmul_bfloat16_tflops")
    if rate and rates.get("flops_per_step"):
        result["compute_floor_ms"] = 1000 * rates["flops_per_step"] / (rate * 1e12)
    return result


def phase_medians(phases: dict) -> dict:
    """Per profiler range of a step: its CPU time (the host queueing work) and its kernels' device time."""
    return {
        name: {"cpu": phase["cpu_ms"]["median"], "device": phase.get("device_ms", {}).get("median")}
        for name, phase in phases.items()
    }


def step_flops(data: Path, device: torch.device, tiny: bool) -> int:
    """Floating-point operations of one fp32 voc step (matrix products, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = voc_config(data, device, tiny, "train.iterations=10", "data.num_workers=0")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir, DistContext(0, 1, 0, device))
        batch = next(iter(trainer._loader()))
        trainer.iteration = cfg.method.loss_warmup_iters + 2  # every loss counts
        trainer.assignment_forward.capturable = False  # a graph's replay is invisible to the counter
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.train_step(batch)
    return counter.get_total_flops()


def evaluation(data: Path, device: torch.device, tiny: bool, amp: str) -> dict:
    cfg = voc_config(data, device, tiny, f"eval.amp={amp}")
    split = load_split(data, "val")
    network = build_network(cfg.model, VOC_CLASSES, pretrained=False).to(device)
    thresholds = CplThresholds.from_config(cfg.method)
    dist = DistContext(0, 1, 0, device)
    evaluate(network, split, cfg, thresholds, dist, max_images=2 * cfg.eval.batch_size)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    evaluate(network, split, cfg, thresholds, dist)
    seconds = time.perf_counter() - started
    rate = len(split.samples) / seconds
    return {
        "images": len(split.samples),
        "image_size": "500x375",
        "input_size": cfg.eval.size,
        "scales": list(cfg.eval.scales),
        "flip": cfg.eval.flip,
        "batch_size": cfg.eval.batch_size,
        "images_per_s": rate,
        "voc_val_seconds": VOC_VAL_IMAGES / rate,
    }


def summary(data: dict) -> list[str]:
    """The report as Markdown: the tests and the demo in a line each, then the tables of
    docs/benchmarks.md, then what failed or was skipped."""
    sections = data["sections"]
    lines = []
    tests = sections.get("tests", {})
    if "counts" in tests:
        lines.append("CUDA tests: " + ", ".join(f"{count} {outcome}" for outcome, count in tests["counts"].items()))
        lines += [
            f"- {t['outcome']}: {t['name']} {t.get('message', '')[:300]}"
            for t in tests["tests"]
            if t["outcome"] != "passed"
        ]
    demo = sections.get("demo", {})
    if "trained" in demo:
        before, after = demo["untrained"]["miou_unmasked"], demo["trained"]["miou_unmasked"]
        lines.append(
            f"demo: unmasked mIoU {before:.2f} untrained, {after:.2f} after {demo['steps']} steps "
            f"({demo['train_seconds']:.0f} s, beside the tests)"
        )
    rates, flops = sections.get("machine", {}), (sections.get("flops") or {}).get("flops_per_step")
    if rates.get("matmul_bfloat16_tflops"):
        lines.append(
            f"measured here: {rates['matmul_bfloat16_tflops']:.0f} TFLOP/s bf16, {rates['matmul_float32_tflops']:.1f} "
            f"TFLOP/s fp32 (8192³ products), copies at {rates['copy_gb_per_s']:.0f} GB/s; a voc step: "
            f"{(flops or 0) / 1e12:.2f} TFLOP"
        )
    lines += [
        "",
        "| voc step | alone (ms) | back to back (ms) | images/s | peak memory (GiB) | compute floor (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, section in sections.items():
        if name.startswith("step ") and "pipelined_step_ms" in section:
            config = section["config"]
            rate = {
                ("none", "same"): rates.get("matmul_float32_tflops"),
                ("bf16", "same"): rates.get("matmul_bfloat16_tflops"),
                ("fp16", "same"): rates.get("matmul_bfloat16_tflops"),
            }.get((config["amp"], config["assignment_amp"]))
            floor = f"{1000 * flops / (rate * 1e12):.1f}" if flops and rate else "–"  # mixed precisions: no one rate
            peak = section["memory"]["cuda_step_peak_mib"]
            cells = [
                name.removeprefix("step "),
                f"{section['step_ms']['median']:.1f}",
                f"{section['pipelined_step_ms']:.1f}",
                f"{section['images_per_s']:.1f}",
                "–" if peak is None else f"{peak / 1024:.2f}",
                floor,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| evaluation | images/s | VOC val (1,449 images) |", "|---|---:|---:|"]
    for name, section in sections.items():
        if name.startswith("evaluation") and "images_per_s" in section:
            lines.append(f"| {name} | {section['images_per_s']:.1f} | {section['voc_val_seconds']:.0f} s |")
    lines += [
        f"{name}: {section.get('error') or section.get('skipped')}"
        for name, section in sections.items()
        if "error" in section or "skipped" in section
    ]
    return lines


def demo(data: Path, work: Path, device: torch.device, tiny: bool) -> dict:
    generate_synthetic_dataset(data, seed=0, **({"num_train": 40, "num_val": 8} if tiny else {}))
    return demo_training(data, work, device, tiny)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="JSON output (default benchmarks/results/gpu-DEVICE.json)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later sections are skipped after it")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the script itself")
    parser.add_argument("--table", metavar="JSON", help="print the tables of a report this script wrote, and stop")
    args = parser.parse_args()
    if args.table:
        print("\n".join(summary(json.loads(Path(args.table).read_text()))))
        return
    device, tiny = torch.device(args.device), args.tiny
    label = torch.cuda.get_device_name(0).split()[-1].lower() if device.type == "cuda" else "cpu"
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"gpu-{label}.json")
    report = Report(out, args.budget)
    report.data["tiny"] = tiny
    work = Path(tempfile.mkdtemp(prefix="cosa-gpu-"))
    demo_data, junit = work / "demo-data", work / "tests.xml"

    rates = dict(report.run("machine", lambda: machine(device, 512 if tiny else 8192)) or {})
    voc_data = voc_like_dataset(work / "voc-like", 8 if tiny else 64, (500, 375))
    tests = run_tests(junit, tiny)  # alongside the demo: neither is timed
    report.run("demo", lambda: demo(demo_data, work, device, tiny))
    report.run("tests", lambda: test_results(tests, junit, report.left() - 60))
    flops = report.run("flops", lambda: {"flops_per_step": step_flops(voc_data, device, tiny)}) or {}
    rates["flops_per_step"] = flops.get("flops_per_step")
    for name, variant in STEP_VARIANTS:
        report.run(f"step {name}", lambda v=variant: training_step(voc_data, device, tiny, v, rates), needs=30)
    for amp in ("none", "bf16"):
        report.run(f"evaluation {amp}", lambda amp=amp: evaluation(voc_data, device, tiny, amp), needs=20)
    print("\n".join(summary(report.data)))
    print(f"wrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
