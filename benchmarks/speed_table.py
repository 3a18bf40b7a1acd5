"""The speed tables of docs/benchmarks.md, from the JSON files benchmarks/speed.py wrote.

python benchmarks/speed_table.py benchmarks/results/speed-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STEP_PHASES = (
    "cosa/assignment_pass",
    "cosa/pseudo_labels",
    "cosa/online_forward",
    "cosa/loss/reg",
    "cosa/backward",
    "cosa/optimizer",
)


def main(paths: list[str]) -> None:
    results = [json.loads(Path(path).read_text()) for path in paths]
    print(
        "| run | step (s) | floor (s) | step / floor | data wait | "
        + " | ".join(name.removeprefix("cosa/") for name in STEP_PHASES)
        + " | peak RSS (GiB) | infer 1 scale (img/s) "
        "| infer eval protocol (img/s) |"
    )
    print("|---|" + "---:|" * (len(STEP_PHASES) + 7))
    for result in results:
        phases = result["phases"]
        shares = [f"{phases[name]['share_pct']:.1f}%" if name in phases else "–" for name in STEP_PHASES]
        inference = result["inference"]
        step, floor = result["step_ms"]["median"] / 1000, result["floor_ms"]["median"] / 1000
        cells = [
            result["label"],
            f"{step:.2f}",
            f"{floor:.2f}",
            f"{result['step_over_floor']:.3f}",
            f"{result['data_wait_share_pct']:.1f}%",
            *shares,
            f"{result['memory']['rss_peak_at_end_mib'] / 1024:.1f}",
            f"{inference['single_scale']['images_per_s']:.2f}",
            f"{inference['eval_protocol']['images_per_s']:.3f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
