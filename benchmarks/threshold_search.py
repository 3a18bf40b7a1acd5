"""Cost of the dynamic threshold search as a share of a training step.

    python benchmarks/threshold_search.py demo --data DATA [--steps 20] [--warmup 3] [key=value ...]

Trains the preset's release recipe with ``method.threshold_search.enabled=true`` for warm-up +
steps iterations in one process, timing every whole step and, inside it, the threshold update
(push, mixture fit, smoothing, for both CAMs). Reports medians and the share of the step
(sum of update times / sum of step times over the measured steps). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import environment

from cosa.config import load_config
from cosa.engine.distributed import DistContext, resolve_device
from cosa.engine.trainer import Trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", help="JSON output (default benchmarks/results/threshold-search-PRESET.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    out = Path(args.out or f"benchmarks/results/threshold-search-{Path(args.preset).stem}.json")

    total = args.warmup + args.steps
    cfg = load_config(
        args.preset,
        "release",
        args.data,
        [
            *args.overrides,
            "method.threshold_search.enabled=true",
            f"train.iterations={total}",
            f"train.eval_every={total + 1}",
            f"train.checkpoint_every={total + 1}",
            f"train.log_every={total + 1}",
        ],
    )
    device = resolve_device(cfg.train.device)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir, DistContext(0, 1, 0, device))
        thresholds = trainer.objective.thresholds
        search_seconds: list[float] = []
        original_update = thresholds.update

        def timed_update(*maps: torch.Tensor) -> None:
            synchronize(device)
            started = time.perf_counter()
            original_update(*maps)
            synchronize(device)
            search_seconds.append(time.perf_counter() - started)

        thresholds.update = timed_update
        step_seconds = []
        for batch in trainer._loader():
            trainer.iteration += 1
            synchronize(device)
            started = time.perf_counter()
            trainer.train_step(batch)
            synchronize(device)
            step_seconds.append(time.perf_counter() - started)
            if trainer.iteration == total:
                break
    steps, searches = step_seconds[args.warmup :], search_seconds[args.warmup :]
    result = {
        **environment(),
        "preset": args.preset,
        "overrides": args.overrides,
        "device": str(device),
        "measured_steps": len(steps),
        "median_step_s": statistics.median(steps),
        "median_search_s": statistics.median(searches),
        "search_share": sum(searches) / sum(steps),
        "buffer_values": int(thresholds.cam.buffer.numel()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"step {result['median_step_s'] * 1000:.1f} ms, threshold search {result['median_search_s'] * 1000:.1f} ms "
        f"(median; {100 * result['search_share']:.2f}% of the step over {len(steps)} steps, "
        f"{result['buffer_values']} buffer values per CAM)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
