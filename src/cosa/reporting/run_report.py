"""One self-contained HTML page that shows a training run at a glance (``cosa report``, ``cosa demo``).

Everything is inline — CSS, and images as base64 PNG data URIs; no script, no external URL — so
the page is a single file that can be archived, mailed or attached to an issue and still show
everything. It is built from what the run directory holds: a missing piece (checkpoint,
metrics) leaves a note in its section saying what is missing instead of stopping the report. The
dataset is not the run's: one that is missing or does not fit the checkpoint stops the report
with a one-line error (``--no-eval`` makes a page without the evaluation, which needs no
dataset). Every text that comes from a file (paths, class names, config values, error messages)
goes through :func:`esc`. The page's figures can also be written as PNG files, into a folder
beside the page (:func:`figures_folder`).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cosa.config.load import config_from_dict, read_saved_config
from cosa.config.schema import Config
from cosa.data.layouts import DatasetSplit
from cosa.engine.distributed import DistContext, resolve_device
from cosa.engine.evaluate import evaluate
from cosa.engine.inference import protocol_text
from cosa.engine.trained import TrainedModel, load_trained, read_checkpoint, split_for
from cosa.errors import CosaError
from cosa.files import os_errors_named, write_file, write_text_atomically
from cosa.outputs import RUN_ENTRIES, check_output_file, check_output_folder, refuse_inputs
from cosa.reporting.pictures import png_bytes
from cosa.reporting.plots import confusion_figure, run_pngs
from cosa.reporting.predictions import GRID_COLUMNS, prediction_grid

CHECKPOINTS = ("checkpoints/last.pt", "checkpoints/best.pt")  # the first one present is reported
RUN_FILES = ("config.yaml", "metrics.jsonl", "final_metrics.json", *CHECKPOINTS)
GRID_IMAGES = 6
HEADLINE = (
    ("miou_unmasked", "segmentation mIoU, unmasked (no labels at test time)"),
    ("miou_tag_masked", "segmentation mIoU, tag-masked (true tags mask the logits)"),
    ("cam_miou", "CAM mIoU (CAMs of the true classes)"),
    ("cpl_miou", "CPL mIoU (on the pixels it labels)"),
    ("cpl_coverage", "CPL coverage (% of pixels labelled)"),
    ("cpl_precision", "CPL precision (% of labelled pixels right)"),
    ("cpl_recall", "CPL recall (% of all pixels labelled right)"),
    ("coexistence", "coexistence, segmentation (% of context pixels taken as the tied class)"),
    ("coexistence_cam", "coexistence, CAM"),
    ("coexistence_cpl", "coexistence, CPL"),
)
CURVE_CAPTIONS = {
    "thresholds.png": "CPL thresholds over iterations",
    "cpl_confidence.png": "CPL quality by AN confidence over iterations (Fig. 3 analysis), CPL precision and recall",
    "losses.png": "training losses",
    "miou.png": "validation metrics during training",
    "classifier_fit.png": "classifier fit: mAP of the training tags on the last training crops",
}
# Every figure a page may show, by the file name --png gives it, in page order.
FIGURE_NAMES = ("confusion.png", *CURVE_CAPTIONS, "predictions.png")
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc; padding: .2em .6em; }
th { background: #f2f2f2; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; } .note { color: #8a4b00; background: #fff6e5; padding: .4em .8em; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: .9em; }
"""


@dataclass
class RunContents:
    """What was read from a run directory; ``missing`` says in words what could not be."""

    run_dir: Path
    cfg: Config | None = None
    final_metrics: dict | None = None
    checkpoint: Path | None = None
    curves: dict[str, bytes] = field(default_factory=dict)  # the figures of metrics.jsonl, by file name
    curves_note: str | None = None  # why there are none
    missing: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """What evaluating the checkpoint gave the page; ``why_not`` says what it could not give."""

    iteration: int | None = None
    cfg: Config | None = None
    result: dict | None = None  # evaluate()'s dict, with ``confusion``
    class_names: list[str] = field(default_factory=list)
    confusion_png: bytes | None = None
    grid_png: bytes | None = None
    why_not: str | None = None


# --- reading the run ----------------------------------------------------------------------------


def read_run(run_dir: str | Path) -> RunContents:
    """The pieces of ``run_dir`` that can be read; a directory with none of them is no run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any((run_dir / name).is_file() for name in RUN_FILES):
        raise CosaError(f"{run_dir}: not a run directory (none of {', '.join(RUN_FILES)})")
    run = RunContents(run_dir.resolve())  # "." has a name once resolved
    run.cfg = _read_config(run)
    run.final_metrics = _read_final_metrics(run)
    run.checkpoint = next((run.run_dir / name for name in CHECKPOINTS if (run.run_dir / name).is_file()), None)
    if run.checkpoint is None:
        run.missing.append("no checkpoint (checkpoints/last.pt or checkpoints/best.pt)")
    _read_curves(run)
    return run


def _read_curves(run: RunContents) -> None:
    if not (run.run_dir / "metrics.jsonl").is_file():
        run.curves_note = "no metrics.jsonl: nothing logged"
        return
    try:
        run.curves = run_pngs(run.run_dir)
    except (ValueError, KeyError) as error:  # a line that is not JSON, or without an iteration
        run.curves_note = f"metrics.jsonl unreadable: {error}"
        return
    if not run.curves:
        run.curves_note = "metrics.jsonl holds no curves yet"


def _read_config(run: RunContents) -> Config | None:
    path = run.run_dir / "config.yaml"
    if not path.is_file():
        run.missing.append("no config.yaml (the checkpoint's config is shown when it is evaluated)")
        return None
    try:
        return read_saved_config(path)
    except CosaError as error:
        run.missing.append(f"config.yaml unreadable: {error}")
        return None


def _read_final_metrics(run: RunContents) -> dict | None:
    path = run.run_dir / "final_metrics.json"
    if not path.is_file():
        run.missing.append("no final_metrics.json (the run has not finished, or its validation split has no masks)")
        return None
    try:
        metrics = json.loads(path.read_text())
    except ValueError as error:
        run.missing.append(f"final_metrics.json unreadable: {error}")
        return None
    if not isinstance(metrics, dict) or "per_class" not in metrics:
        run.missing.append("final_metrics.json holds no per-class metrics")
        return None
    return metrics


def evaluate_run(run: RunContents, max_images: int | None = None, data: str | None = None) -> Evaluation:
    """Evaluate the run's checkpoint on its validation split, with the confusion matrix and a
    prediction grid. A checkpoint that is missing or unreadable becomes ``why_not``; a dataset
    that is missing or does not fit it is a :class:`CosaError`."""
    if run.checkpoint is None:
        return Evaluation(why_not="no checkpoint to evaluate")
    device = resolve_device("auto")
    try:
        model = load_trained(run.checkpoint, device)
    except CosaError as error:
        return Evaluation(why_not=str(error))
    return _evaluate_checkpoint(model, run.checkpoint, device, max_images, data)


def skipped_evaluation(run: RunContents) -> Evaluation:
    """No evaluation (``--no-eval``); the checkpoint is still read for its iteration and config."""
    evaluation = Evaluation(why_not="evaluation skipped (--no-eval)")
    if run.checkpoint is not None:
        try:
            payload = read_checkpoint(run.checkpoint)
            evaluation.iteration = int(payload["iteration"])
            evaluation.cfg = config_from_dict(payload["config"], f"{run.checkpoint} (config)")
        except CosaError as error:
            run.missing.append(str(error))
    return evaluation


def _validation_split(model: TrainedModel, checkpoint: Path, data: str | None) -> DatasetSplit:
    """The split to evaluate on; a mistake (a wrong ``--data``, a moved dataset) is told, not hidden in the page."""
    try:
        return split_for(model, checkpoint, data, model.cfg.data.val_split)
    except CosaError as error:
        raise CosaError(
            f"{error} (the report evaluates the checkpoint on the run's validation split; --no-eval makes a page "
            "without the evaluation)"
        ) from None


def _evaluate_checkpoint(
    model: TrainedModel, checkpoint: Path, device: torch.device, max_images: int | None, data: str | None
) -> Evaluation:
    cfg = model.cfg
    split = _validation_split(model, checkpoint, data)
    evaluation = Evaluation(model.iteration, cfg, class_names=["background", *model.class_names])
    grid = prediction_grid(
        model.network, split, cfg, model.thresholds, device, list(range(min(GRID_IMAGES, len(split.samples))))
    )
    evaluation.grid_png = png_bytes(grid)
    if not split.has_masks:
        evaluation.why_not = f"split '{split.split}' of {split.root} has no masks to score against"
        return evaluation
    limit = cfg.eval.max_images if max_images is None else max_images
    evaluation.result = evaluate(
        model.network,
        split,
        cfg,
        model.thresholds,
        DistContext(0, 1, 0, device),
        max_images=limit,
        progress=True,
        return_confusion=True,
    )
    evaluation.result["protocol"].update(checkpoint=str(checkpoint), iteration=model.iteration)
    evaluation.confusion_png = png_bytes(confusion_figure(evaluation.result["confusion"], evaluation.class_names))
    return evaluation


# --- HTML pieces ------------------------------------------------------------------------------


def esc(value: object) -> str:
    """Text for the page: anything read from a file may hold ``<`` or ``&``."""
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, caption: str) -> str:
    return f'<figure><img src="{data_uri(png)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def number(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def value_text(value: object) -> str:
    """Config and protocol values as one line: lists and dicts as JSON, the rest as is."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def key_value_table(rows: list[tuple[str, object]]) -> str:
    """Two columns, no header: name and value (lists and dicts as JSON), both escaped."""
    cells = "".join(f"<tr><th>{esc(name)}</th><td>{esc(value_text(value))}</td></tr>" for name, value in rows)
    return f"<table><tbody>{cells}</tbody></table>"


def table(header: list[str], rows: list[list[str]], total_last: bool = False) -> str:
    """An HTML table of texts (escaped here): a name column, then right-aligned numbers."""
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{esc(cell)}</td>' if c else f"<td>{esc(cell)}</td>" for c, cell in enumerate(row)
        )
        total = total_last and r == len(rows) - 1
        body.append(f'<tr class="total">{cells}</tr>' if total else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(title: str, body: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{body}</section>"


# --- sections ---------------------------------------------------------------------------------


def header_section(run: RunContents, evaluation: Evaluation, metrics: dict | None) -> str:
    """The run directory, what was trained, which checkpoint and under which protocol."""
    cfg = run.cfg or evaluation.cfg
    rows: list[tuple[str, object]] = [("run directory", run.run_dir)]
    if cfg is not None:
        rows += [
            ("recipe", cfg.method.recipe),
            ("backbone", cfg.model.backbone),
            ("crop", cfg.data.crop_size),
            ("iterations", cfg.train.iterations),
            ("batch (global)", cfg.train.batch_size),
            ("dataset", cfg.data.root),
        ]
    if run.checkpoint is not None:
        iteration = "unknown" if evaluation.iteration is None else evaluation.iteration
        rows += [("checkpoint", run.checkpoint.relative_to(run.run_dir)), ("checkpoint iteration", iteration)]
    body = key_value_table(rows)
    if metrics is not None:
        body += "<h3>Evaluation protocol of the metrics below</h3>" + key_value_table(
            list(metrics.get("protocol", {}).items())
        )
    if run.missing:
        body += (
            "<h3>Missing from the run directory</h3><ul>"
            + "".join(f"<li>{esc(item)}</li>" for item in run.missing)
            + "</ul>"
        )
    return f"<header><h1>cosa report: {esc(run.run_dir.name)}</h1>{body}</header>"


def headline_section(metrics: dict | None, source: str) -> str:
    if metrics is None:
        return section("Headline metrics", note("no metrics: no final_metrics.json and no evaluation"))
    rows = [[label, number(metrics[key])] for key, label in HEADLINE if key in metrics]
    protocol = f": {protocol_text(metrics['protocol'])}" if "protocol" in metrics else ""
    return section("Headline metrics", f"<p>From {esc(source + protocol)}.</p>" + table(["metric", "value"], rows))


def per_class_section(metrics: dict | None) -> str:
    """IoU per class for the three predictions, and their means."""
    if metrics is None:
        return section("Per class IoU", note("no metrics: no final_metrics.json and no evaluation"))
    tag_masked, cam = metrics.get("per_class_tag_masked", {}), metrics.get("per_class_cam", {})
    rows = [
        [name, number(value), number(tag_masked.get(name)), number(cam.get(name))]
        for name, value in metrics["per_class"].items()
    ]
    rows.append(
        [
            "mIoU",
            number(metrics.get("miou_unmasked")),
            number(metrics.get("miou_tag_masked")),
            number(metrics.get("cam_miou")),
        ]
    )
    return section("Per class IoU", table(["class", "unmasked", "tag-masked", "CAM"], rows, total_last=True))


def contexts_section(metrics: dict | None) -> str:
    """For data whose classes come with their own context (``context.json``): the share of each
    class's objects, of its context and of the rest of the background labelled as the class."""
    where = (metrics or {}).get("where_classes_go")
    if not where:
        return ""
    kinds = ("cam", "cpl", "segmentation")
    header = ["class"] + [f"{kind} on {region}" for kind in kinds for region in ("object", "context", "background")]
    rows = [
        [name] + [number(shares[kind][region]) for kind in kinds for region in ("object", "context", "background")]
        for name, shares in where.items()
    ]
    caption = (
        "<p>% of each region labelled as the class: its objects, its context (background in the masks) "
        "and the rest of the background of the images that show it. CAM: the thresholded CAMs of the "
        "true classes; CPL: the CAM pseudo-labels; segmentation: unmasked.</p>"
    )
    return section("Where each class goes", caption + table(header, rows))


def confusion_section(evaluation: Evaluation) -> str:
    if evaluation.result is None:
        return section("Confusion matrix", note(f"not computed: {evaluation.why_not}"))
    protocol = evaluation.result["protocol"]
    caption = (
        f"unmasked segmentation of {protocol['checkpoint']} (iteration {protocol['iteration']}): "
        f"mIoU {number(evaluation.result['miou_unmasked'])} ({protocol_text(protocol)})"
    )
    return section("Confusion matrix", figure_html(evaluation.confusion_png, caption))


def curves_section(run: RunContents) -> str:
    """Training and threshold curves."""
    if not run.curves:
        return section("Training curves", note(run.curves_note))
    body = "".join(figure_html(png, CURVE_CAPTIONS[name]) for name, png in run.curves.items())
    return section("Training curves", body)


def grid_section(evaluation: Evaluation) -> str:
    if evaluation.grid_png is None:
        return section("Predictions", note(f"not drawn: {evaluation.why_not}"))
    caption = "columns: " + ", ".join(GRID_COLUMNS) + " (CPL beige: ignored; prediction unmasked)"
    return section("Predictions on validation images", figure_html(evaluation.grid_png, caption))


def render_page(run: RunContents, evaluation: Evaluation) -> str:
    """The whole page. Metrics come from final_metrics.json, else from this report's evaluation."""
    if run.final_metrics is not None:
        metrics, source = run.final_metrics, "final_metrics.json (the run's last evaluation)"
    else:
        metrics, source = evaluation.result, "this report's evaluation of the checkpoint"
    body = "".join(
        [
            header_section(run, evaluation, metrics),
            headline_section(metrics, source),
            per_class_section(metrics),
            contexts_section(metrics),
            confusion_section(evaluation),
            curves_section(run),
            grid_section(evaluation),
        ]
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>cosa report: {esc(run.run_dir.name)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def report_page(
    run: RunContents, max_images: int | None = None, run_evaluation: bool = True, data: str | None = None
) -> str:
    """The page of ``run``, evaluating its checkpoint unless ``run_evaluation`` is false."""
    evaluation = evaluate_run(run, max_images, data) if run_evaluation else skipped_evaluation(run)
    return render_page(run, evaluation)


def page_figures(run: RunContents, evaluation: Evaluation) -> dict[str, bytes]:
    """The figures the page shows, as PNGs by file name (:data:`FIGURE_NAMES`)."""
    found = {"confusion.png": evaluation.confusion_png, **run.curves, "predictions.png": evaluation.grid_png}
    return {name: png for name, png in found.items() if png is not None}


def figures_folder(page: Path) -> Path:
    """Where ``--png`` writes the figures of ``page``: beside it, named after it (``report_figures/``)."""
    return page.with_name(f"{page.stem}_figures")


def write_figures(folder: Path, figures: dict[str, bytes]) -> list[Path]:
    """Write ``figures`` into ``folder``, replacing those of an earlier page. A figure this page
    lacks (the confusion matrix of an earlier evaluation) is removed, so the folder shows what the
    page shows; other files are left alone."""
    for name in FIGURE_NAMES:
        if name not in figures:
            with os_errors_named(folder / name, "remove"):
                (folder / name).unlink(missing_ok=True)
    return [write_file(folder / name, Path.write_bytes, png) for name, png in figures.items()]


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    max_images: int | None = None,
    run_evaluation: bool = True,
    data: str | None = None,
    png: bool = False,
) -> list[Path]:
    """Write the page of ``run_dir`` to ``out`` (default RUN_DIR/report.html) and, with ``png``, its
    figures into :func:`figures_folder`; returns the paths written, the page's first."""
    run = read_run(run_dir)
    page = Path(out) if out else run.run_dir / "report.html"
    dataset = data or (run.cfg.data.root if run.cfg else None)
    inputs = [("the run file", run.run_dir / name) for name in RUN_ENTRIES]
    inputs += [("the dataset", dataset)] if dataset else []
    # The page of a run and its figures may lie in the run's folder, not on its files.
    check_output_file(page, "--out", inputs, own=run.run_dir)
    if png:
        refuse_inputs(figures_folder(page), "--png", inputs, "folder")
        check_output_folder(figures_folder(page), "--png", own=run.run_dir)
    evaluation = evaluate_run(run, max_images, data) if run_evaluation else skipped_evaluation(run)
    write_text_atomically(page, render_page(run, evaluation))
    if not png:
        return [page]
    return [page, *write_figures(figures_folder(page), page_figures(run, evaluation))]
