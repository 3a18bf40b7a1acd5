"""Every command of the ``cosa`` CLI, and one-line errors for user mistakes."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from cosa.cli.main import build_parser, main
from cosa.data.io import read_mask

from conftest import SUBPROCESS_ENV, TINY_OVERRIDES, assert_one_line_error, cosa_command, run_cli, torchrun_command


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "demo", "data"):
        assert command in out


def test_train_writes_a_run_and_resumes(trained_run, tiny_data, tmp_path, capsys):
    assert (trained_run / "checkpoints" / "last.pt").is_file() and (trained_run / "config.yaml").is_file()
    assert (trained_run / "metrics.jsonl").is_file()
    code, _, err = run_cli(capsys, "train", "--config", "demo", "--data", tiny_data, "--out", trained_run)
    assert_one_line_error(code, err, trained_run, "--resume")
    resumed = tmp_path / "resumed"
    shutil.copytree(trained_run, resumed)
    code, out, _ = run_cli(capsys, "train", "--out", resumed, "--resume", "train.iterations=8")
    assert code == 0 and "mIoU" in out
    entries = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert entries[-1]["iteration"] == 8


@pytest.mark.parametrize("fast", [False, True])
def test_evaluate_writes_metrics_and_protocol(trained_run, tiny_data, tmp_path, capsys, fast):
    out_json = tmp_path / "metrics.json"
    argv = [
        "evaluate",
        "--checkpoint",
        trained_run / "checkpoints" / "last.pt",
        "--data",
        tiny_data,
        "--split",
        "val",
        "--json",
        out_json,
    ] + (["--fast"] if fast else [])
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and "mIoU" in out and "background" in out
    assert f"checkpoint {trained_run / 'checkpoints' / 'last.pt'} (iteration 6)" in out  # which weights were scored
    result = json.loads(out_json.read_text())
    # Each mIoU is the mean over the classes that occur, which the per-class table lists (to 0.01).
    for miou, table in (
        ("miou_unmasked", "per_class"),
        ("miou_tag_masked", "per_class_tag_masked"),
        ("cam_miou", "per_class_cam"),
    ):
        occurring = [iou for iou in result[table].values() if iou is not None]
        assert result[miou] == pytest.approx(sum(occurring) / len(occurring), abs=0.005)
    assert {"coexistence", "coexistence_cam"} <= set(result)  # the synthetic data's own metric
    # recall = correct / valid = precision × labelled / valid
    assert result["cpl_recall"] == pytest.approx(result["cpl_precision"] * result["cpl_coverage"] / 100)
    assert set(result["per_class"]) == {"background", "ball", "block", "tent", "star", "ring", "boat"}
    protocol = result["protocol"]
    assert protocol["split"] == "val" and protocol["num_images"] == 8 and protocol["network"] == "assignment"
    assert protocol["scales"] == ([1.0] if fast else [1.0, 0.5]) and protocol["flip"] == (not fast)
    assert protocol["amp"] == "none"
    scales = "scale 1.0" if fast else "2 scales + flip"  # the checkpoint's eval.scales=[1.0,0.5], eval.flip
    assert out.splitlines()[-1] == (
        f"mIoU {result['miou_unmasked']:.2f} unmasked, {result['miou_tag_masked']:.2f} tag-masked "
        f"(val, 8 images, {scales}, size 64, assignment network)"
    )


def test_evaluate_amp_overrides_the_checkpoints_and_is_written_with_the_protocol(
    trained_run, tiny_data, tmp_path, capsys
):
    out_json = tmp_path / "metrics.json"
    checkpoint = trained_run / "checkpoints" / "last.pt"
    code, out, _ = run_cli(
        capsys, "evaluate", "--checkpoint", checkpoint, "--data", tiny_data, "--amp", "bf16", "--json", out_json
    )
    assert code == 0 and out.splitlines()[-1].endswith(", size 64, assignment network, bf16 autocast)")
    assert json.loads(out_json.read_text())["protocol"]["amp"] == "bf16"


def test_evaluate_with_crf_reports_both(trained_run, tiny_data, tmp_path, capsys):
    pytest.importorskip("pydensecrf.densecrf", reason="the optional crf extra (pydensecrf2) is not installed")
    out_json = tmp_path / "crf.json"
    code, _, _ = run_cli(
        capsys,
        "evaluate",
        "--checkpoint",
        trained_run / "checkpoints" / "last.pt",
        "--data",
        tiny_data,
        "--crf",
        "--json",
        out_json,
        "--max-images",
        3,
    )
    result = json.loads(out_json.read_text())
    assert code == 0 and result["protocol"]["crf"]
    occurring = [iou for iou in result["crf"]["per_class_tag_masked"].values() if iou is not None]
    assert result["crf"]["miou_tag_masked"] == pytest.approx(sum(occurring) / len(occurring), abs=0.005)


def test_predict_writes_masks_and_cam_pictures(trained_run, tiny_data, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("val_0000.png", "val_0001.png"):
        shutil.copy(tiny_data / "images" / name, images / name)
    code, out, _ = run_cli(
        capsys, "predict", "--checkpoint", trained_run / "checkpoints" / "last.pt", images, "--out", tmp_path / "out"
    )
    # the checkpoint's protocol, that of its evaluations
    assert code == 0 and out == f"wrote 2 masks to {tmp_path / 'out'} (2 scales + flip, size 64, assignment network)\n"
    mask = read_mask(tmp_path / "out" / "val_0000.png")
    assert tuple(mask.shape) == (64, 64) and int(mask.max()) <= 6
    assert Image.open(tmp_path / "out" / "val_0000.png").mode == "P"
    assert (tmp_path / "out" / "val_0001_cam.jpg").is_file() and (tmp_path / "out" / "val_0001_overlay.jpg").is_file()


def test_data_synthetic_and_check(tmp_path, capsys):
    root = tmp_path / "synthetic"
    code, out, _ = run_cli(capsys, "data", "synthetic", "--out", root, "--train", 6, "--val", 3, "--size", 48)
    assert code == 0 and (root / "classes.txt").is_file() and len(list((root / "images").iterdir())) == 9
    code, out, _ = run_cli(capsys, "data", "check", root)
    assert code == 0 and "0 problem(s)" in out
    # What the preset needs to know, and the settings that follow (cosa.config.scaling).
    assert "shorter side 48–48 px" in out and "classes never alone:" in out
    assert "settings scaled to 'train'" in out and "training starts: data.crop_size=64 " in out
    (root / "images" / "train_0001.png").write_bytes(b"broken")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "train_0002.png")
    code, out, _ = run_cli(capsys, "data", "check", root)
    assert code == 1 and "2 problem(s)" in out and "train_0001.png: cannot read image" in out


def test_demo_writes_the_run_report(tmp_path, capsys):
    out = tmp_path / "demo"
    code, printed, _ = run_cli(
        capsys, "demo", "--out", out, "--train-images", 12, "--val-images", 6, "--image-size", 64, *TINY_OVERRIDES
    )
    assert code == 0 and "mIoU" in printed
    page = (out / "report.html").read_text(encoding="utf-8")  # the run report of cosa report
    for fragment in (
        "segmentation mIoU, unmasked",
        "coexistence, segmentation",
        "Confusion matrix",
        "Predictions on validation images",
    ):
        assert fragment in page
    assert str((out / "run").resolve()) in page and 'src="data:image/png;base64,' in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"val", "train"}
    train = metrics["train"]  # the CPL on training images: recall = precision × coverage
    assert train["cpl_recall"] == pytest.approx(train["cpl_precision"] * train["cpl_coverage"] / 100)
    code, _, _ = run_cli(
        capsys,
        "demo",
        "--out",
        out,
        "--overwrite",
        "--train-images",
        12,
        "--val-images",
        6,
        "--image-size",
        64,
        *TINY_OVERRIDES,
    )
    assert code == 0  # the demo may run again in its own folder, when asked to


# --- bad input: one line naming the file or key ------------------------------------------------


def copy_dataset(source, target):
    shutil.copytree(source, target)
    shutil.rmtree(target / ".cosa", ignore_errors=True)
    return target


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_training_image(tiny_data, tmp_path, capsys, workers):
    data = copy_dataset(tiny_data, tmp_path / "data")
    for image in (data / "images").glob("train_*.png"):
        image.write_bytes(b"\x89PNG broken")
    code, _, err = run_cli(
        capsys,
        "train",
        "--config",
        "demo",
        "--data",
        data,
        "--out",
        tmp_path / "run",
        *TINY_OVERRIDES,
        f"data.num_workers={workers}",
    )  # a worker wraps the error
    assert_one_line_error(code, err, "train_", "cannot read image")


def test_missing_mask_for_the_supervised_recipe(tiny_data, tmp_path, capsys):
    data = copy_dataset(tiny_data, tmp_path / "data")
    for mask in (data / "masks").glob("train_*.png"):
        mask.unlink()
    code, _, err = run_cli(
        capsys,
        "train",
        "--config",
        "demo",
        "--recipe",
        "supervised",
        "--data",
        data,
        "--out",
        tmp_path / "run",
        *TINY_OVERRIDES,
    )
    assert_one_line_error(code, err, "lacks the masks of 24 of its 24 images", "--recipe supervised trains")
    assert not (tmp_path / "run").exists()  # checked before the run folder is made


def test_unknown_class_name(tiny_data, tmp_path, capsys):
    data = copy_dataset(tiny_data, tmp_path / "data")
    (data / "train.csv").write_text("image,labels\ntrain_0000.png,ball;unicorn\n")
    code, _, err = run_cli(
        capsys, "train", "--config", "demo", "--data", data, "--out", tmp_path / "run", *TINY_OVERRIDES
    )
    assert_one_line_error(code, err, "train.csv:2", "unicorn")


def test_wrong_kind_of_checkpoint(tiny_data, tmp_path, capsys):
    import torch

    path = tmp_path / "model.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", path, "--data", tiny_data)
    assert_one_line_error(code, err, path, "not a cosa checkpoint")


def test_unknown_config_key(tiny_data, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run", "train.iteratons=3"
    )
    assert_one_line_error(code, err, "train.iteratons")


# --- second pass: numbers and devices are checked while the arguments are parsed ---------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["predict", "--checkpoint", "m.pt", "images", "--out", "o", "--batch-size", 0],
            "argument --batch-size: must be at least 1",
        ),
        (
            ["predict", "--checkpoint", "m.pt", "images", "--out", "o", "--size", 0],
            "argument --size: must be at least 16",
        ),
        (
            ["predict", "--checkpoint", "m.pt", "images", "--out", "o", "--size", 7],
            "argument --size: must be at least 16",
        ),
        (
            ["predict", "--checkpoint", "m.pt", "images", "--out", "o", "--scales", 1, 0],
            "argument --scales: must be positive, not '0'",
        ),
        (
            ["predict", "--checkpoint", "m.pt", "images", "--out", "o", "--scales", -1],
            "argument --scales: must be positive, not '-1'",
        ),
        (["data", "synthetic", "--out", "d", "--seed", -1], "argument --seed: must be in 0..4294967295"),
        (["data", "synthetic", "--out", "d", "--size", 0], "argument --size: must be at least 32"),
        (["data", "synthetic", "--out", "d", "--train", 0], "argument --train: must be at least 1"),
        (["data", "synthetic", "--out", "d", "--val", -1], "argument --val: must be at least 0"),
        (["demo", "--out", "d", "--seed", -1], "argument --seed: must be in 0..4294967295"),
        (["demo", "--out", "d", "--train-images", 0], "argument --train-images: must be at least 1"),
        (["demo", "--out", "d", "--image-size", 8], "argument --image-size: must be at least 32"),
        (
            ["demo", "--out", "d", "--val-images", 0],
            "argument --val-images: must be at least 1",
        ),  # it evaluates on them
        (
            ["evaluate", "--checkpoint", "m.pt", "--crf", "--crf-workers", -1],
            "argument --crf-workers: must be at least 0",
        ),
    ],
)
def test_numeric_options_out_of_range_are_refused_while_parsing(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, message)
    assert not list(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize("command", ["predict", "export-pseudo-labels"])
@pytest.mark.parametrize("device", ["mps", "cpu:1", "gpu"])
def test_an_unknown_device_is_one_line(trained_run, tiny_data, tmp_path, capsys, command, device):
    checkpoint = trained_run / "checkpoints" / "last.pt"
    argv = (
        ["predict", "--checkpoint", checkpoint, tiny_data / "images" / "val_0000.png"]
        if command == "predict"
        else ["export-pseudo-labels", "--checkpoint", checkpoint, "--data", tiny_data]
    )
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "out", "--device", device)
    assert_one_line_error(code, err, f"--device={device}: not a device (auto, cpu, cuda or cuda:N)")
    assert not (tmp_path / "out").exists()


# --- command-line habits: any order, a list of commands, close matches, no stray warnings ------------


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        ([], ["train", "evaluate", "predict", "export-pseudo-labels", "convert-official", "demo", "data"]),
        (["data"], ["synthetic", "check", "prepare-voc", "prepare-coco"]),
    ],
    ids=["cosa", "cosa data"],
)
def test_a_command_group_alone_prints_its_usage_and_commands(capsys, argv, names):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and not err  # nothing was run
    assert out.startswith(f"usage: {' '.join(['cosa', *argv])} [-h]")
    for name in names:
        assert f"\n    {name} " in out or f"\n    {name}\n" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["train", "train.iterations=5", "--config", "demo", "train.seed=1", "--out", "r", "eval.size=64"],
            {"config": "demo", "out": "r", "overrides": ["train.iterations=5", "train.seed=1", "eval.size=64"]},
        ),
        (
            ["demo", "train.iterations=5", "--out", "d", "eval.size=64", "--seed", "3"],
            {"out": "d", "seed": 3, "overrides": ["train.iterations=5", "eval.size=64"]},
        ),
        (
            ["convert-official", "in.pth", "out.pt", "eval.size=512", "--config", "voc", "eval.flip=false"],
            {
                "source": "in.pth",
                "target": "out.pt",
                "config": "voc",
                "overrides": ["eval.size=512", "eval.flip=false"],
            },
        ),
    ],
    ids=["train", "demo", "convert-official"],
)
def test_options_and_overrides_come_in_any_order(argv, expected):
    args = vars(build_parser().parse_args(argv))
    assert {key: args[key] for key in expected} == expected


def test_a_mistyped_key_on_the_command_line_names_the_closest_keys(tiny_data, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run", "train.iteration=5"
    )
    assert_one_line_error(code, err)
    assert (
        err.strip() == "cosa: error: override: unknown config key 'train.iteration' (did you mean 'train.iterations'?)"
    )
    assert not (tmp_path / "run").exists()


def test_a_run_that_ends_within_a_warm_up_is_refused_before_anything_is_written(tiny_data, tmp_path, capsys):
    # The habit the brief example shows: overrides first, then the options.
    code, _, err = run_cli(
        capsys, "train", "train.iterations=5", "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run"
    )
    assert_one_line_error(code, err)
    assert err.strip() == (
        "cosa: error: train.iterations=5 ends within the warm-up of method.loss_warmup_iters=75 (the pseudo-label "
        "losses would never switch on: the run would train the classifier alone, as recipe cam-only does) and "
        "optim.warmup_iters=20 (the learning rate would never reach optim.lr); set them below 5 (e.g. "
        "method.loss_warmup_iters=2 optim.warmup_iters=0) or raise train.iterations"
    )
    assert not (tmp_path / "run").exists()


def test_running_out_of_memory_is_one_line_naming_the_sizes(tiny_data, tmp_path, capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):  # what torch's CPU allocator raises for eval.size=4512
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
            "to allocate 1302921216 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr("cosa.engine.launch.run_training", out_of_memory)
    code, _, err = run_cli(
        capsys, "train", "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run", *TINY_OVERRIDES
    )
    assert_one_line_error(code, err, "out of memory (1.2 GiB more needed on the CPU): lower the sizes", "eval.size")


@pytest.mark.slow
def test_torchrun_prints_no_deprecation_warning(tiny_data, tmp_path):
    command = torchrun_command(
        "-m", "cosa", "train", "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run", *TINY_OVERRIDES,
        "train.iterations=3", "eval.max_images=2", processes=1,
    )  # fmt: skip
    finished = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Warning" not in finished.stderr, finished.stderr[-3000:]


def test_the_own_preset_applies_the_settings_data_check_prints_and_keeps_the_users(tiny_data, tmp_path, capsys):
    from cosa.cli.train import resolve_config
    from cosa.config.load import check_run_length

    code, out, _ = run_cli(capsys, "data", "check", tiny_data)
    line = next(line for line in out.splitlines() if line.startswith("settings scaled to 'train'"))
    printed = dict(word.split("=", 1) for word in line.split("training starts: ", 1)[1].split(" "))
    argv = ["train", "--config", "own", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "train.seed=3"]
    cfg, run_dir, scaled = resolve_config(build_parser().parse_args([*argv, "eval.size=64"]))
    check_run_length(cfg)  # its warm-ups fit its length
    assert run_dir == tmp_path / "r" and cfg.train.seed == 3 and cfg.eval.size == 64  # the user's values win
    assert all(f"{key}={value}" in scaled for key, value in printed.items() if key != "eval.size")
    assert cfg.data.crop_size == int(printed["data.crop_size"]) == 64
    assert cfg.train.iterations == int(printed["train.iterations"]) == 100
    assert scaled.startswith("settings scaled to split 'train' (24 images, median shorter side 64 px, objects ")
    assert scaled.endswith("; yours kept: eval.size")
    # Measured again, the same settings: a run resumed with its command line changes nothing.
    cfg_again, _, _ = resolve_config(build_parser().parse_args([*argv, "eval.size=64"]))
    assert cfg_again == cfg


def test_a_closed_pipe_ends_a_command_quietly(tiny_data):
    """``cosa data check ROOT | head -1``: the reader leaves before the command has written."""
    process = subprocess.Popen(
        cosa_command("data", "check", tiny_data), env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and stderr == "", stderr


def test_train_expands_a_tilde_in_out_and_names_the_run_directory_first(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(
        capsys, "train", "--config", "demo", "--data", tiny_data, "--out", "~/run", *TINY_OVERRIDES
    )
    assert code == 0, err
    assert (tmp_path / "home" / "run" / "final_metrics.json").is_file() and not (tmp_path / "~").exists()
    assert out.startswith(f"run directory: {tmp_path / 'home' / 'run'}\n")
