"""Shared fixtures and helpers: a tiny synthetic dataset, configurations that train in seconds on a
CPU, one trained run, an untrained checkpoint, and running the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosa.cli.main import main
from cosa.config.load import load_config
from cosa.data.datasets import EvaluationImages
from cosa.data.io import write_mask
from cosa.data.layouts import load_split
from cosa.data.synthetic import generate_synthetic_dataset
from cosa.engine.checkpoint import save_checkpoint
from cosa.method.thresholds import CplThresholds
from cosa.models.network import build_network

# Tests run in parallel (pytest-xdist); one thread each avoids oversubscribing the cores.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).resolve().parent

# GPU checks carry the `cuda` mark (`pytest -m cuda` runs them alone, benchmarks/gpu.py on a GPU)
# and skip where there is no GPU. A test that runs on both takes its device from DEVICES.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, requires_cuda])]


# For worker scripts run in a subprocess (torchrun, kill tests): one thread, and this folder on the
# path so that they import the helpers below as the tests do.
# The official fixtures' weights follow a rule (tests/fixtures/official/README.md).
LAYER_NORM_WEIGHTS = ("norm.weight", "norm1.weight", "norm2.weight")


def released_state(released: dict[str, np.ndarray], prefixes: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The released network's weights rebuilt by the fixtures' rule: each tensor drawn from a
    generator seeded by its key, with ``prefixes`` (one per key) prepended where given."""
    state = {}
    for index, (key, shape) in enumerate(zip(released["state_keys"], released["state_shapes"])):
        key = str(key)
        shape = tuple(int(size) for size in shape.strip("()").split(",") if size.strip())
        seed = (str(prefixes[index]) if prefixes is not None else "") + key
        tensor = 0.02 * np.random.default_rng(zlib.crc32(seed.encode())).standard_normal(shape, dtype=np.float32)
        if key.endswith(LAYER_NORM_WEIGHTS):
            tensor = tensor + 1.0
        state[key] = torch.from_numpy(tensor)
    return state


def cosa_command(*argv) -> list[str]:
    """``python -m cosa ARGV``, for tests that need a process of its own (kill, lock, signal)."""
    return [sys.executable, "-m", "cosa", *map(str, argv)]


def torchrun_command(*argv, processes: int = 2) -> list[str]:
    """``torchrun --standalone --nproc_per_node=PROCESSES ARGV`` (a script or ``-m MODULE``)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        *map(str, argv),
    ]


SUBPROCESS_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
}

# A process that locks a folder (cosa.locks) as a live command does, and holds it until it is killed.
HOLD_LOCK = (
    "import sys, time; from cosa.locks import FolderLock; FolderLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); time.sleep(600)"
)


@contextmanager
def lock_held_by_another_process(lock_file):
    """Yields the process holding ``lock_file``; it is killed with SIGKILL at the end, if not before."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_file)], stdout=subprocess.PIPE, text=True, env=SUBPROCESS_ENV
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


TINY_OVERRIDES = [
    "model.backbone=mobilenetv2_050",
    "model.pretrained=none",
    "data.crop_size=64",
    "data.num_workers=0",
    "train.batch_size=4",
    "train.iterations=6",
    "train.log_every=2",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "method.loss_warmup_iters=2",
    "method.contrastive.warmup_iters=2",
    "optim.warmup_iters=2",
    "eval.size=64",
    "eval.scales=[1.0,0.5]",
    "eval.batch_size=8",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """24 training and 8 validation images of 64 px, with masks."""
    root = tmp_path_factory.mktemp("tiny_data")
    generate_synthetic_dataset(root, seed=0, num_train=24, num_val=8, image_size=64)
    return root


@pytest.fixture(scope="session")
def trained_run(tiny_data, tmp_path_factory):
    """A run of 6 steps made by ``cosa train`` on the tiny data, shared by every test that needs a
    trained model. Read it only; copy it to change it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--config", "demo", "--data", str(tiny_data), "--out", str(run), *TINY_OVERRIDES]) == 0
    return run


def save_untrained_checkpoint(path, class_names, *overrides):
    """A cosa checkpoint of a freshly initialised tiny network with ``class_names``: predictions need a
    checkpoint, not a trained one, and this one takes a second instead of a training run."""
    cfg = load_config("demo", None, None, [*TINY_OVERRIDES, *overrides])
    torch.manual_seed(0)
    state = build_network(cfg.model, len(class_names), pretrained=False).state_dict()
    save_checkpoint(
        path,
        {
            "config": asdict(cfg),
            "class_names": list(class_names),
            "iteration": 0,
            "online": state,
            "assignment": state,
            "thresholds": CplThresholds.from_config(cfg.method).state_dict(),
        },
    )
    return path


@pytest.fixture(scope="module")
def untrained_checkpoint(tiny_data, tmp_path_factory):
    """An untrained checkpoint for the tiny dataset's classes (module-scoped, each module its own)."""
    from cosa.data.layouts import read_class_names

    return save_untrained_checkpoint(
        tmp_path_factory.mktemp("checkpoint") / "last.pt", read_class_names(tiny_data / "classes.txt")
    )


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``cosa ARGV``; argparse's refusals exit with status 2 too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


def predict_argv(checkpoint, inputs, out, *options) -> list:
    """``cosa predict`` at one scale without flip on the CPU: the quick protocol for tests."""
    return [
        "predict",
        "--checkpoint",
        checkpoint,
        inputs,
        "--out",
        out,
        "--device",
        "cpu",
        "--scales",
        1.0,
        "--no-flip",
        *options,
    ]


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.splitlines() if "cosa: error: " in line]  # progress bars may precede it
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert str(fragment) in lines[0]


# The small datasets of the data and bad-input tests: noise images of this size, these classes.
SIZE = (20, 16)  # width, height
CLASSES = ("cat", "dog")


def write_image(path, size=SIZE, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_folder_dataset(root, rows, classes=CLASSES):
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    lines = ["image,labels"]
    for name, labels, mask in rows:
        write_image(root / "images" / f"{name}.png")
        if mask is not None:
            write_mask(root / "masks" / f"{name}.png", mask)
        lines.append(f"{name}.png,{labels}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def square_mask(label: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A background mask of ``size`` (width, height) with a 4×4 square of ``label``."""
    mask = np.zeros((size[1], size[0]), np.uint8 if label <= 255 else np.uint16)
    mask[2:6, 2:6] = label
    return mask


def folder_dataset(root: Path, rows: list[str], names: tuple[str, ...] = ("a", "b")) -> Path:
    """A folder dataset: images ``names`` (with a 'cat' mask each) and a train.csv of ``rows``."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for name in names:
        write_image(root / "images" / f"{name}.png")
        write_mask(root / "masks" / f"{name}.png", square_mask(1))
    (root / "train.csv").write_text("\n".join(["image,labels", *rows]) + "\n")
    return root


def good_dataset(root: Path) -> Path:
    return folder_dataset(root, ["a.png,cat", "b.png,cat"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained checkpoint for ``CLASSES``, the classes of ``folder_dataset``; a module whose
    tests need other classes defines its own ``checkpoint``."""
    return save_untrained_checkpoint(tmp_path_factory.mktemp("checkpoint") / "last.pt", CLASSES)


def evaluation_item(root: Path, name: str) -> dict:
    """The evaluation item (image and mask) of image ``name`` of split 'train'."""
    split = load_split(root, "train")
    index = [sample.name for sample in split.samples].index(name)
    return EvaluationImages(split, size=32)[index]


def one_line(error: pytest.ExceptionInfo, *fragments: object) -> str:
    """The message of a raised error: one line without a traceback, holding every fragment."""
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def cli_error(capsys, *argv: object) -> str:
    """Run a command that must fail with exit status 2 and one ``cosa: error:`` line; that line."""
    code, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.startswith("cosa: error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def check_problems(capsys, root: Path, *options: object) -> tuple[int, list[str], list[str]]:
    """``cosa data check ROOT OPTIONS``: exit status, problem lines, warning lines."""
    code, out, _ = run_cli(capsys, "data", "check", root, *options)
    problems = [line.removeprefix("problem: ") for line in out.splitlines() if line.startswith("problem: ")]
    warnings = [line.removeprefix("warning: ") for line in out.splitlines() if line.startswith("warning: ")]
    assert f"{len(problems)} problem(s), {len(warnings)} warning(s)" in out
    return code, problems, warnings


def only_problem(capsys, root: Path, *fragments: object) -> str:
    """``cosa data check ROOT`` finds exactly one problem, holding every fragment; that problem."""
    code, problems, _ = check_problems(capsys, root)
    assert code == 1 and len(problems) == 1, problems
    for fragment in fragments:
        assert str(fragment) in problems[0], problems[0]
    return problems[0]
