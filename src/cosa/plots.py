"""Training-analysis figures of a run, drawn from its ``metrics.jsonl`` (``cosa plot``).

- ``thresholds.png`` — the CPL thresholds (δ_h, δ_l) of both CAMs over iterations (fixed lines
  for ``release``, moving ones with the threshold search);
- ``cpl_confidence.png`` — per AN-confidence bin, over iterations, how often the strongest class
  is the true label and how often the truth is background (the paper's Fig. 3 analysis; needs
  training masks), with CPL precision and recall;
- ``losses.png`` — every loss term;
- ``miou.png`` — the validation metrics.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cosa.engine.monitor import BINS  # noqa: E402
from cosa.engine.runlog import read_metrics  # noqa: E402


def series(records: list[dict], prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    """name (without ``prefix``) → (iterations, values) for every key starting with ``prefix``."""
    found: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for record in records:
        for key, value in record.items():
            if key.startswith(prefix) and isinstance(value, (int, float)):
                found[key[len(prefix):]][0].append(record["iteration"])
                found[key[len(prefix):]][1].append(value)
    return dict(found)


def _line_plot(path: Path, curves: dict[str, tuple[list[int], list[float]]], title: str, ylabel: str,
               log_scale: bool = False) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, (iterations, values) in sorted(curves.items()):
        axis.plot(iterations, values, label=name, marker="." if len(values) < 30 else None)
    axis.set(title=title, xlabel="iteration", ylabel=ylabel)
    if log_scale:
        axis.set_yscale("symlog", linthresh=1e-3)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _confidence_plot(path: Path, records: list[dict]) -> bool:
    right = series(records, "cpl_bins/strongest_class_right_")
    background = series(records, "cpl_bins/background_truth_")
    if not right:
        return False
    iterations = sorted({i for its, _ in right.values() for i in its})
    column = {iteration: c for c, iteration in enumerate(iterations)}

    def grid(found: dict) -> np.ndarray:
        table = np.full((BINS, len(iterations)), np.nan)
        for name, (its, values) in found.items():
            for iteration, value in zip(its, values):
                table[int(name), column[iteration]] = value
        return table

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    extent = (iterations[0], iterations[-1], 0, 1)
    for axis, table, title in ((axes[0], grid(right), "strongest class is the truth (%)"),
                               (axes[1], grid(background), "truth is background (%)")):
        image = axis.imshow(table, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=100, cmap="viridis")
        axis.set(title=title, xlabel="iteration", ylabel="AN confidence max_c M_c")
        figure.colorbar(image, ax=axis)
    for name, (its, values) in sorted(series(records, "cpl/").items()):
        axes[2].plot(its, values, label=f"CPL {name}")
    for name, (its, values) in sorted(series(records, "thresholds/").items()):
        if name.startswith("cam_"):
            axes[0].plot(its, values, color="white", linewidth=1, linestyle="--")
    axes[0].set_xlim(extent[0], extent[1])
    axes[2].set(title="CPL against the training masks", xlabel="iteration", ylabel="%")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write the figures of ``run_dir`` into ``out`` (default RUN/plots); returns their paths."""
    records = read_metrics(run_dir)
    out = Path(out) if out else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures = (("thresholds.png", "thresholds/", "CPL thresholds", "threshold", False),
               ("losses.png", "train/", "training losses", "loss", True),
               ("miou.png", "val/", "validation", "%", False))
    for name, prefix, title, ylabel, log_scale in figures:
        curves = series(records, prefix)
        if prefix == "train/":
            curves = {k: v for k, v in curves.items() if k not in ("lr", "seconds_per_step")}
        if curves:
            _line_plot(out / name, curves, title, ylabel, log_scale)
            written.append(out / name)
    if _confidence_plot(out / "cpl_confidence.png", records):
        written.append(out / "cpl_confidence.png")
    return written
