"""Figures: the training analysis of a run, drawn from its ``metrics.jsonl``, and the confusion
matrix of an evaluation; ``cosa report`` shows them (and with ``--png`` writes them as files).

- ``thresholds.png`` — the CPL thresholds (δ_h, δ_l) of both CAMs over iterations (fixed lines
  for ``release``, moving ones with the threshold search);
- ``cpl_confidence.png`` — per AN-confidence bin, over iterations, how often the strongest class
  is the true label and how often the truth is background (the paper's Fig. 3 analysis; needs
  training masks), with CPL precision and recall;
- ``losses.png`` — every loss term;
- ``miou.png`` — the validation metrics;
- ``classifier_fit.png`` — how well the classifier fits the training tags (engine/label_fit.py).

Figures are made without pyplot, so drawing needs no GUI backend and leaves no figure open.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cosa.engine.monitor import BINS
from cosa.engine.runlog import read_metrics
from cosa.reporting.pictures import png_bytes

# file name, metrics.jsonl key prefix, title, y label, log scale
LINE_FIGURES = (
    ("thresholds.png", "thresholds/", "CPL thresholds", "threshold", False),
    ("losses.png", "train/", "training losses", "loss", True),
    ("miou.png", "val/", "validation", "%", False),
    ("classifier_fit.png", "fit/", "classifier fit: mAP of the last training crops' tags, and chance", "%", False),
)
NOT_LOSSES = ("lr", "seconds_per_step")  # logged under train/ but not loss terms


def series(records: list[dict], prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    """name (without ``prefix``) → (iterations, values) for every key starting with ``prefix``."""
    found: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for record in records:
        for key, value in record.items():
            if key.startswith(prefix) and isinstance(value, (int, float)):
                found[key[len(prefix) :]][0].append(record["iteration"])
                found[key[len(prefix) :]][1].append(value)
    return dict(found)


def _line_figure(
    curves: dict[str, tuple[list[int], list[float]]], title: str, ylabel: str, log_scale: bool = False
) -> Figure:
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    for name, (iterations, values) in sorted(curves.items()):
        axis.plot(iterations, values, label=name, marker="." if len(values) < 30 else None)
    axis.set(title=title, xlabel="iteration", ylabel=ylabel)
    if log_scale:
        axis.set_yscale("symlog", linthresh=1e-3)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _confidence_figure(records: list[dict]) -> Figure | None:
    """The Fig. 3 analysis; None when the run logged no CPL bins (no training masks)."""
    right = series(records, "cpl_bins/strongest_class_right_")
    background = series(records, "cpl_bins/background_truth_")
    if not right:
        return None
    iterations = sorted({i for its, _ in right.values() for i in its})
    column = {iteration: c for c, iteration in enumerate(iterations)}

    def grid(found: dict) -> np.ndarray:
        table = np.full((BINS, len(iterations)), np.nan)
        for name, (its, values) in found.items():
            for iteration, value in zip(its, values):
                table[int(name), column[iteration]] = value
        return table

    figure = Figure(figsize=(15, 4))
    axes = figure.subplots(1, 3)
    # One column (a single logged iteration) still needs a width: matplotlib warns about an empty range.
    extent = (
        (iterations[0], iterations[-1], 0, 1)
        if len(iterations) > 1
        else (iterations[0] - 0.5, iterations[0] + 0.5, 0, 1)
    )
    for axis, table, title in (
        (axes[0], grid(right), "strongest class is the truth (%)"),
        (axes[1], grid(background), "truth is background (%)"),
    ):
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
    return figure


def run_figures(records: list[dict]) -> dict[str, Figure]:
    """File name → figure for every figure the records have data for, in the report's order."""
    figures = {}
    for name, prefix, title, ylabel, log_scale in LINE_FIGURES:
        curves = series(records, prefix)
        if prefix == "train/":
            curves = {k: v for k, v in curves.items() if k not in NOT_LOSSES}
        if curves:
            figures[name] = _line_figure(curves, title, ylabel, log_scale)
    confidence = _confidence_figure(records)
    if confidence is not None:
        figures["cpl_confidence.png"] = confidence
    return figures


def run_pngs(run_dir: str | Path) -> dict[str, bytes]:
    """The figures of ``run_dir`` as PNGs (file name → bytes), to embed in a page or write as files."""
    return {name: png_bytes(figure) for name, figure in run_figures(read_metrics(run_dir)).items()}


def confusion_figure(confusion: list[list[int]], names: list[str]) -> Figure:
    """Row-normalised heat map: where each ground-truth class's pixels go (rows sum to 100%).

    A class absent from the evaluated ground truth has an empty row, marked so that it does not
    read as "0% right".
    """
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0) * 100
    size = len(names)
    small = size <= 25  # cells of larger matrices are too small for numbers
    side = min(3 + 0.5 * size, 18)
    figure = Figure(figsize=(side + 1.5, side))
    axis = figure.subplots()
    image = axis.imshow(share, cmap="Blues", vmin=0, vmax=100)
    rows = [name if total > 0 else f"{name} (absent)" for name, total in zip(names, totals[:, 0])]
    axis.set_xticks(range(size), names, rotation=45, ha="right", fontsize=8 if small else 4)
    axis.set_yticks(range(size), rows, fontsize=8 if small else 4)
    axis.set(xlabel="prediction", ylabel="ground truth", title="confusion, % of each ground-truth class")
    if small:
        for row in range(size):
            for column in range(size):
                axis.text(
                    column,
                    row,
                    f"{share[row, column]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[row, column] > 50 else "black",
                )
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    return figure
