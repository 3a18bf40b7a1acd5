"""``cosa report``: one self-contained HTML page of a run, the confusion matrix behind it, and the
pictures of :mod:`cosa.reporting`."""

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from cosa.cli.main import main
from cosa.engine.checkpoint import load_checkpoint, save_checkpoint

from conftest import assert_one_line_error, run_cli

CLASS_NAMES = ("background", "ball", "block", "tent", "star", "ring", "boat")
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def run_dir(trained_run, tmp_path_factory):
    """A copy of the shared run, which the report is written into."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run, run)
    return run


@pytest.fixture(scope="module")
def page(run_dir):
    """The report of ``run_dir`` at its default place, with an evaluation of 4 images."""
    assert main(["report", str(run_dir), "--max-images", "4"]) == 0
    return (run_dir / "report.html").read_text(encoding="utf-8")


class TagChecker(HTMLParser):
    """Collects the tags of a page and the places where an end tag does not close the open one."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.errors.append(f"</{tag}> at {self.getpos()}")


def parse(page: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    return checker


def embedded_pngs(page: str) -> list[Image.Image]:
    images = []
    for encoded in DATA_URI.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
        image.load()
        images.append(image)
    return images


def test_page_is_self_contained_valid_html(page):
    checker = parse(page)
    assert checker.errors == [] and checker.open == []
    assert {"html", "head", "body", "table", "img", "style"} <= set(checker.tags)
    assert "script" not in checker.tags and "link" not in checker.tags
    assert "http://" not in page and "https://" not in page
    images = embedded_pngs(page)
    # confusion matrix, 5 training figures (thresholds, losses, validation, CPL confidence, classifier
    # fit), prediction grid
    assert len(images) == 7 == page.count("<img ")
    assert all(image.format == "PNG" and image.width > 100 and image.height > 100 for image in images)


def test_page_shows_the_run(page, run_dir):
    assert str(run_dir.resolve()) in page
    for fragment in (
        "release",
        "mobilenetv2_050",
        "Per class IoU",
        "Confusion matrix",
        "tag-masked",
        "CPL thresholds over iterations",
        "Predictions on validation images",
        "num_images",
        "coexistence, segmentation",
        "coexistence, CAM",
        "coexistence, CPL",
    ):
        assert fragment in page
    per_class = page.split("Per class IoU", 1)[1].split("</table>", 1)[0]
    for name in CLASS_NAMES:
        assert f"<td>{name}</td>" in per_class
    contexts = page.split("Where each class goes", 1)[1].split("</table>", 1)[0]  # the data's tied contexts
    assert "<th>cpl on context</th>" in contexts
    assert [name for name in CLASS_NAMES if f"<td>{name}</td>" in contexts] == ["block", "boat"]
    assert 'class="note"' not in page  # nothing is missing from a complete run
    assert "checkpoint iteration</th><td>6</td>" in page
    # every number beside its protocol; the CPL thresholds as the demo preset sets them, not as float32
    assert "From final_metrics.json (the run&#x27;s last evaluation): val, 8 images, 2 scales + flip, size 64, " in page
    assert "(iteration 6): mIoU " in page and "(val, 4 images, 2 scales + flip, size 64, assignment network)" in page
    assert "<th>cpl_thresholds</th><td>[0.8, 0.2]</td>" in page


def test_png_bytes_of_arrays_images_and_figures():
    from cosa.reporting.pictures import png_bytes

    picture = np.zeros((5, 7, 3), np.uint8)
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1], [1, 0])
    for item, size in ((picture, (7, 5)), (Image.fromarray(picture), (7, 5)), (figure, (220, 110))):
        with Image.open(io.BytesIO(png_bytes(item))) as image:
            assert image.format == "PNG" and image.size == size


def test_figures_leave_no_pyplot_figure_open(run_dir):
    import matplotlib.pyplot as plt

    from cosa.reporting.plots import confusion_figure, run_pngs

    before = plt.get_fignums()
    expected = {"thresholds.png", "losses.png", "miou.png", "cpl_confidence.png", "classifier_fit.png"}
    assert set(run_pngs(run_dir)) == expected
    confusion_figure([[3, 1], [0, 0]], ["background", "ball"])
    assert plt.get_fignums() == before


def test_no_eval_skips_the_evaluation(run_dir, tmp_path, monkeypatch):
    import cosa.reporting.run_report

    def fail(*args, **kwargs):
        raise AssertionError("--no-eval must not evaluate")

    monkeypatch.setattr(cosa.reporting.run_report, "evaluate", fail)
    monkeypatch.setattr(cosa.reporting.run_report, "prediction_grid", fail)
    out = tmp_path / "sub" / "page.html"
    assert main(["report", str(run_dir), "--no-eval", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "evaluation skipped (--no-eval)" in page and "<td>boat</td>" in page
    assert "checkpoint iteration</th><td>6</td>" in page
    assert len(embedded_pngs(page)) == 5  # the training figures only
    assert parse(page).errors == []


FIGURES = {
    "confusion.png",
    "thresholds.png",
    "losses.png",
    "miou.png",
    "classifier_fit.png",
    "cpl_confidence.png",
    "predictions.png",
}


def test_png_writes_the_figures_of_the_page_beside_it(run_dir, tmp_path, capsys):
    out = tmp_path / "page.html"
    code, printed, _ = run_cli(capsys, "report", run_dir, "--max-images", 2, "--out", out, "--png")
    folder = tmp_path / "page_figures"
    assert code == 0 and printed.split()[0] == str(out)  # the page first, then its figures
    assert sorted(printed.split()[1:]) == sorted(str(folder / name) for name in FIGURES)
    assert {path.name for path in folder.iterdir()} == FIGURES
    embedded = sorted(base64.b64decode(data) for data in DATA_URI.findall(out.read_text(encoding="utf-8")))
    assert sorted(path.read_bytes() for path in folder.iterdir()) == embedded  # the page's very pictures
    (folder / "notes.txt").write_text("mine")
    assert run_cli(capsys, "report", run_dir, "--no-eval", "--out", out, "--png")[0] == 0
    # a page without the evaluation has no confusion matrix and no prediction grid: neither have its files
    assert {path.name for path in folder.iterdir()} == FIGURES - {"confusion.png", "predictions.png"} | {"notes.txt"}
    assert (folder / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("what", ["file", "dataset", "run"])
def test_png_refuses_a_figures_folder_that_is_a_file_a_dataset_or_another_run(
    run_dir, tiny_data, tmp_path, capsys, what
):
    folder = tmp_path / "page_figures"
    if what == "file":
        folder.write_text("mine")
    else:
        shutil.copytree(tiny_data if what == "dataset" else run_dir, folder, ignore=shutil.ignore_patterns("*.html"))
    message = {
        "file": f"--png {folder} is a file; name a folder",
        "dataset": f"--png {folder} is the dataset {folder}",
        "run": f"--png {folder} is the run folder {folder}",
    }[what]
    code, _, err = run_cli(capsys, "report", run_dir, "--no-eval", "--out", tmp_path / "page.html", "--png")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "page.html").exists()


def test_missing_pieces_are_named_on_the_page(run_dir, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial, ignore=shutil.ignore_patterns("checkpoints", "final_metrics.json", "*.html"))
    assert main(["report", str(partial)]) == 0
    page = (partial / "report.html").read_text(encoding="utf-8")
    for fragment in (
        "no checkpoint (checkpoints/last.pt or checkpoints/best.pt)",
        "no final_metrics.json",
        "not computed: no checkpoint to evaluate",
        "no metrics: no final_metrics.json",
    ):
        assert fragment in page
    assert len(embedded_pngs(page)) == 5 and parse(page).errors == []


@pytest.mark.parametrize("how", ["--data", "moved"])
def test_a_missing_dataset_stops_the_report_in_one_line(run_dir, tmp_path, capsys, how):
    """The dataset is the user's, not the run's: a page without the evaluation asked for would hide the mistake."""
    nowhere, out = tmp_path / "nowhere", tmp_path / "page.html"
    run, data = run_dir, ["--data", nowhere]
    if how == "moved":  # the dataset the run trained on is gone
        run, data = shutil.copytree(run_dir, tmp_path / "run"), []
        payload = load_checkpoint(run / "checkpoints" / "last.pt")
        payload["config"]["data"]["root"] = str(nowhere)
        save_checkpoint(run / "checkpoints" / "last.pt", payload)
    code, _, err = run_cli(capsys, "report", run, *data, "--out", out)
    why = "dataset directory not found" if data else f"the dataset of {run}/checkpoints/last.pt is not there"
    assert_one_line_error(code, err, f"cosa: error: {nowhere}: {why}")
    assert err.rstrip().endswith(
        "(the report evaluates the checkpoint on the run's validation split; --no-eval makes a page without the "
        "evaluation)"
    )
    assert not out.exists()
    assert run_cli(capsys, "report", run, *data, "--no-eval", "--out", out)[0] == 0  # which needs no dataset
    assert "<td>boat</td>" in out.read_text(encoding="utf-8")


def test_text_from_files_is_escaped(run_dir, tmp_path):
    odd = tmp_path / "<b>&run"
    shutil.copytree(run_dir, odd, ignore=shutil.ignore_patterns("checkpoints", "*.html"))
    assert main(["report", str(odd)]) == 0
    page = (odd / "report.html").read_text(encoding="utf-8")
    assert "<b>" not in page and "&lt;b&gt;&amp;run" in page


def test_not_a_run_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cosa: error:" in err and "not a run directory" in err
    assert "Traceback" not in err


def chromium_binary() -> str | None:
    return next((path for path in map(shutil.which, ("chromium", "chromium-browser")) if path), None)


@pytest.mark.slow
def test_page_renders_in_headless_chromium(page, run_dir, tmp_path):
    browser = chromium_binary()
    if browser is None:
        pytest.skip("no chromium or chromium-browser binary on PATH (apt-get install chromium)")
    screenshot = tmp_path / "page.png"
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={screenshot}",
        "--window-size=1200,2000",
        (run_dir / "report.html").resolve().as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert screenshot.is_file(), completed.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == (1200, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, tables and figures, not a blank page
