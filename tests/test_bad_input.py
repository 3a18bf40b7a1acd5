"""Bad input, case by case: what is fatal (one-line error naming the file), what works, what is
reported by ``cosa data check``; and the security rules (paths, pickles, YAML tags, network).

docs/reliability.md lists every case with the test that pins it.
"""

from __future__ import annotations

import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosa.cli.main import main
from cosa.config.load import load_config
from cosa.data.datasets import EvaluationImages, TrainingViews, label_vector
from cosa.data.io import IGNORE_INDEX, read_image, read_mask, write_mask
from cosa.data.layouts import load_split
from cosa.data.views import normalize
from cosa.engine.checkpoint import save_checkpoint
from cosa.errors import CosaError
from cosa.method.pseudo_labels import cam_pseudo_labels
from cosa.method.thresholds import CplThresholds
from cosa.models.network import build_network

from conftest import TINY_OVERRIDES

SIZE = (20, 16)  # width, height of the test images
CLASSES = ("cat", "dog")


# --- helpers -----------------------------------------------------------------------------------


def write_rgb(path: Path, size: tuple[int, int] = SIZE, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def square_mask(label: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), np.uint8 if label <= 255 else np.uint16)
    mask[2:6, 2:6] = label
    return mask


def folder_dataset(root: Path, rows: list[str], names: tuple[str, ...] = ("a", "b")) -> Path:
    """A folder dataset: images ``names`` (with a 'cat' mask each) and a train.csv of ``rows``."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for name in names:
        write_rgb(root / "images" / f"{name}.png")
        write_mask(root / "masks" / f"{name}.png", square_mask(1))
    (root / "train.csv").write_text("\n".join(["image,labels", *rows]) + "\n")
    return root


def good_dataset(root: Path) -> Path:
    return folder_dataset(root, ["a.png,cat", "b.png,cat"])


def voc_dataset(root: Path, lines: list[str], names: tuple[str, ...] = ("x1", "x2")) -> Path:
    for name in names:
        write_rgb(root / "JPEGImages" / f"{name}.jpg")
        write_mask(root / "SegmentationClassAug" / f"{name}.png", square_mask(1))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text("\n".join(lines) + "\n")
    return root


def one_line(error: pytest.ExceptionInfo, *fragments: object) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_error(capsys, *argv: object) -> str:
    """Run a command that must fail with exit status 2 and one ``cosa: error:`` line."""
    code, _, err = cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.startswith("cosa: error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def check_problems(capsys, root: Path) -> tuple[int, list[str], list[str]]:
    """``cosa data check ROOT``: exit status, problem lines, warning lines."""
    code, out, _ = cli(capsys, "data", "check", root)
    problems = [line.removeprefix("problem: ") for line in out.splitlines() if line.startswith("problem: ")]
    warnings = [line.removeprefix("warning: ") for line in out.splitlines() if line.startswith("warning: ")]
    assert f"{len(problems)} problem(s), {len(warnings)} warning(s)" in out
    return code, problems, warnings


def only_problem(capsys, root: Path, *fragments: object) -> str:
    code, problems, _ = check_problems(capsys, root)
    assert code == 1 and len(problems) == 1, problems
    for fragment in fragments:
        assert str(fragment) in problems[0], problems[0]
    return problems[0]


def training_views(split, crop_size: int = 32) -> TrainingViews:
    return TrainingViews(split, crop_size, (0.5, 2.0), 0.5, seed=0, with_masks=split.has_masks)


def evaluation_item(root: Path, name: str) -> dict:
    split = load_split(root, "train")
    index = [sample.name for sample in split.samples].index(name)
    return EvaluationImages(split, size=32)[index]


# --- corrupt files -----------------------------------------------------------------------------


def truncated(path: Path, image_format: str) -> None:
    """A 64×48 noise image in ``image_format``, cut in half."""
    pixels = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert("P" if path.parent.name == "masks" else "RGB").save(path, image_format)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: truncated(p, "PNG"), id="truncated-png"),
        pytest.param(lambda p: truncated(p, "JPEG"), id="truncated-jpeg"),
        pytest.param(lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40)), id="corrupt-png-header"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty-file"),
    ],
)
def test_corrupt_image_is_fatal_and_listed(tmp_path, capsys, damage):
    root = good_dataset(tmp_path / "ds")
    damage(root / "images" / "b.png")
    with pytest.raises(CosaError) as error:
        read_image(root / "images" / "b.png")
    one_line(error, root / "images" / "b.png", "cannot read image")
    views = training_views(load_split(root, "train"))
    with pytest.raises(CosaError) as error:
        [views[position] for position in range(2)]  # both images of the first epoch
    one_line(error, "b.png", "cannot read image")
    only_problem(capsys, root, root / "images" / "b.png", "cannot read image")


def test_corrupt_mask_is_fatal_and_listed(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    truncated(root / "masks" / "b.png", "PNG")
    with pytest.raises(CosaError) as error:
        evaluation_item(root, "b")
    one_line(error, root / "masks" / "b.png", "cannot read mask")
    only_problem(capsys, root, root / "masks" / "b.png", "cannot read mask")


def test_corrupt_voc_mask_is_listed_once(tmp_path, capsys):
    root = voc_dataset(tmp_path / "voc", ["x1", "x2"])
    (root / "SegmentationClassAug" / "x2.png").write_bytes(b"broken")
    with pytest.raises(CosaError) as error:
        load_split(root, "train_aug")  # labels come from the masks
    one_line(error, "x2.png", "cannot read mask")
    only_problem(capsys, root, "x2.png", "cannot read mask")
    assert not (root / ".cosa" / "labels-train_aug.json").exists()  # no labels cached from a broken mask


# --- masks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "mode", "message"),
    [
        pytest.param(7, "P", "mask values [7] are outside 0..2 and 255", id="label-above-C"),
        pytest.param(300, "I;16", "mask values 0..300 do not fit 0..255", id="16-bit-above-255"),
    ],
)
def test_mask_values_outside_the_classes_are_fatal(tmp_path, capsys, values, mode, message):
    root = good_dataset(tmp_path / "ds")
    mask = square_mask(values)
    if mode == "P":
        write_mask(root / "masks" / "b.png", mask)
    else:
        Image.fromarray(mask).save(root / "masks" / "b.png")
    with pytest.raises(CosaError) as error:
        evaluation_item(root, "b")
    one_line(error, root / "masks" / "b.png", message)
    only_problem(capsys, root, root / "masks" / "b.png", message)


def test_mask_of_another_size_is_fatal(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    write_mask(root / "masks" / "b.png", square_mask(1, size=(8, 8)))
    with pytest.raises(CosaError) as error:
        evaluation_item(root, "b")
    expected = f"{root / 'masks' / 'b.png'}: mask is (8, 8) but its image is (16, 20)"
    assert one_line(error) == expected
    assert only_problem(capsys, root) == expected


def test_rgb_mask_is_fatal(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    Image.new("RGB", SIZE).save(root / "masks" / "b.png")
    with pytest.raises(CosaError) as error:
        evaluation_item(root, "b")
    one_line(error, root / "masks" / "b.png", "must be a palette or grayscale PNG, got mode RGB")
    only_problem(capsys, root, "b.png", "got mode RGB")


# --- image kinds that work ---------------------------------------------------------------------


def png16(pixels: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    height, width = pixels.shape[:2]
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(">u2").reshape(height, -1))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def save(image: Image.Image, image_format: str = "PNG"):
    return lambda path: image.save(path, image_format)


def palette_image(rgb: tuple[int, int, int]) -> Image.Image:
    image = Image.new("P", SIZE, 1)
    image.putpalette([0, 0, 0, *rgb])
    return image


# (writer, the RGB value every pixel must read as, tolerance for lossy formats)
IMAGE_KINDS = {
    "grayscale": (save(Image.new("L", SIZE, 77)), (77, 77, 77), 0),
    "grayscale-alpha": (save(Image.new("LA", SIZE, (77, 0))), (77, 77, 77), 0),
    "palette": (save(palette_image((10, 200, 30))), (10, 200, 30), 0),
    "rgba-alpha-dropped": (save(Image.new("RGBA", SIZE, (10, 20, 30, 0))), (10, 20, 30), 0),
    "cmyk-jpeg": (save(Image.new("CMYK", SIZE, (0, 255, 0, 0)), "JPEG"), (255, 0, 255), 3),
    "cmyk-tiff": (save(Image.new("CMYK", SIZE, (255, 0, 0, 0)), "TIFF"), (0, 255, 255), 0),
    "16-bit-grayscale": (save(Image.fromarray(np.full(SIZE[::-1], 0xABCD, np.uint16))), (0xAB, 0xAB, 0xAB), 0),
    "16-bit-rgb": (
        lambda path: path.write_bytes(png16(np.full((*SIZE[::-1], 3), (0x1234, 0xFF00, 0x00FF)), 2)),
        (0x12, 0xFF, 0x00),
        0,
    ),
}


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_kinds_are_read_as_rgb(tmp_path, kind):
    writer, rgb, tolerance = IMAGE_KINDS[kind]
    path = tmp_path / f"{kind}.img"
    writer(path)
    image = read_image(path)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, SIZE[1], SIZE[0])
    assert (image.int() - torch.tensor(rgb).view(3, 1, 1)).abs().max() <= tolerance


def test_a_dataset_of_every_image_kind_checks_clean(tmp_path, capsys):
    # Cats and dogs in turn: a class on every image is a warning.
    rows = [f"{kind}.img,{CLASSES[index % 2]}" for index, kind in enumerate(IMAGE_KINDS)]
    root = folder_dataset(tmp_path / "ds", rows, names=())
    for index, (kind, (writer, _, _)) in enumerate(IMAGE_KINDS.items()):
        (root / "images").mkdir(exist_ok=True)
        writer(root / "images" / f"{kind}.img")
        write_mask(root / "masks" / f"{kind}.png", square_mask(1 + index % 2))
    assert check_problems(capsys, root) == (0, [], [])
    views = training_views(load_split(root, "train"))
    assert all(views[position]["weak"].shape == (3, 32, 32) for position in range(len(IMAGE_KINDS)))


def test_a_header_claiming_a_huge_image_is_refused(tmp_path):
    """A decompression bomb: a 1×1 PNG whose header claims 100 000 × 100 000 pixels."""
    path = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # and its checksum
    path.write_bytes(bytes(data))
    for read, what in ((read_image, "image"), (read_mask, "mask")):
        with pytest.raises(CosaError) as error:
            read(path)
        one_line(error, path, f"cannot read {what}", "exceeds limit")


def exif_rotated(path: Path) -> np.ndarray:
    """A 20×16 image stored with EXIF orientation 6 (shown rotated 90° clockwise); its stored pixels."""
    pixels = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    pixels[:, : SIZE[0] // 2] = 200  # left half bright: after the rotation, the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif)
    return pixels


def test_exif_orientation_is_applied_to_the_image_and_the_mask_must_match_it(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    stored = exif_rotated(root / "images" / "b.png")
    image = read_image(root / "images" / "b.png")
    assert np.array_equal(image.permute(1, 2, 0).numpy(), np.rot90(stored, k=-1))
    write_mask(root / "masks" / "b.png", square_mask(1, size=(SIZE[1], SIZE[0])))  # drawn on the displayed image
    assert check_problems(capsys, root)[:2] == (0, [])
    assert evaluation_item(root, "b")["mask"].shape == (20, 16)
    write_mask(root / "masks" / "b.png", square_mask(1))  # drawn on the stored pixels: refused
    only_problem(capsys, root, "b.png: mask is (16, 20) but its image is (20, 16)")


def test_image_smaller_than_the_crop_is_padded(tmp_path):
    root = folder_dataset(tmp_path / "ds", ["tiny.png,cat"], names=())
    write_rgb(root / "images" / "tiny.png", size=(5, 3))
    write_mask(root / "masks" / "tiny.png", np.ones((3, 5), np.uint8))
    views = TrainingViews(load_split(root, "train"), 64, (0.5, 2.0), blur_probability=0.0, seed=0, with_masks=True)
    for position in range(8):  # eight draws of scale, offset and flip
        item = views[position]
        top, bottom, left, right = item["box"].tolist()
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert item["weak"].shape == (3, 64, 64) and 0 < bottom - top <= 6 and 0 < right - left <= 10
        black = normalize(torch.zeros(3, 1, 1, dtype=torch.uint8))  # the padding, as released
        assert torch.equal(item["weak"][:, ~inside], black[:, :, 0].expand(-1, int((~inside).sum())))
        assert (item["mask"][~inside] == IGNORE_INDEX).all()
        assert (item["mask"][inside] == 1).all()


# --- split files -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder", "voc"])
def test_empty_split_is_fatal_and_listed(tmp_path, capsys, layout):
    root = folder_dataset(tmp_path / "ds", []) if layout == "folder" else voc_dataset(tmp_path / "voc", [])
    split = "train" if layout == "folder" else "train_aug"
    with pytest.raises(CosaError) as error:
        load_split(root, split)
    one_line(error, root, f"split '{split}' has no images")
    only_problem(capsys, root, f"split '{split}' has no images")


def test_duplicate_names_in_a_csv_are_fatal_and_listed(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat", "b.png,cat", "a.png,dog"])
    table = root / "train.csv"
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    assert one_line(error) == f"{table}:4: image 'a' is already listed at {table}:2"
    assert only_problem(capsys, root) == f"{table}:4: image 'a' is already listed at {table}:2"


def test_duplicate_names_in_a_voc_list_are_fatal_and_listed(tmp_path, capsys):
    root = voc_dataset(tmp_path / "voc", ["/JPEGImages/x1.jpg /SegmentationClassAug/x1.png", "x2", "x1"])
    listing = root / "ImageSets" / "Segmentation" / "train_aug.txt"
    with pytest.raises(CosaError) as error:
        load_split(root, "train_aug")
    assert one_line(error) == f"{listing}:3: image 'x1' is already listed at {listing}:1"
    only_problem(capsys, root, f"{listing}:3: image 'x1' is already listed")


def test_csv_with_bom_and_extra_columns_is_read(tmp_path):
    root = good_dataset(tmp_path / "ds")
    (root / "train.csv").write_bytes("\ufeffimage,labels,source\na.png,cat,web\nb.png,,web\n".encode())
    split = load_split(root, "train")
    assert [(sample.name, sample.labels) for sample in split.samples] == [("a", (0,)), ("b", ())]


def test_csv_row_with_more_fields_than_the_header_is_fatal(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat,dog", "b.png,cat"])  # labels separated by ',', not ';'
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, f"{root / 'train.csv'}:2", "more fields than the header's 2", "';'")
    only_problem(capsys, root, "train.csv:2: more fields")


def test_unknown_class_names_are_fatal_and_listed(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat;horse", "b.png,cat"])
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, f"{root / 'train.csv'}:2", "unknown class name(s) ['horse']")
    only_problem(capsys, root, "train.csv:2: unknown class name(s) ['horse']")


def test_split_file_that_is_not_utf8_is_fatal(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    (root / "train.csv").write_bytes("image,labels\na.png,ch\xe2t\n".encode("latin-1"))
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, root / "train.csv", "not UTF-8 text")
    only_problem(capsys, root, "train.csv", "not UTF-8 text")


def test_images_without_labels_are_background_only_images(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat", "b.png,"])
    write_mask(root / "masks" / "b.png", np.zeros(SIZE[::-1], np.uint8))
    split = load_split(root, "train")
    assert split.samples[1].labels == () and label_vector((), 2).sum() == 0
    code, problems, warnings = check_problems(capsys, root)
    assert (code, problems) == (0, [])
    assert warnings[0] == f"{root / 'images' / 'b.png'}: no class labels (background only)"
    assert warnings[1:] == [  # a folder dataset's classes are the user's: one never tagged is named
        f"{root}: class dog of classes.txt tagged on no image of split 'train': the model can never predict it; "
        "tag the images that show it, or remove it from classes.txt"
    ]
    voc = voc_dataset(tmp_path / "voc", ["x1", "x2"])
    write_mask(voc / "SegmentationClassAug" / "x2.png", np.zeros(SIZE[::-1], np.uint8))  # labels come from masks
    assert load_split(voc, "train_aug").samples[1].labels == ()
    code, problems, warnings = check_problems(capsys, voc)
    assert (code, problems) == (0, [])
    assert warnings == [f"{voc / 'JPEGImages' / 'x2.jpg'}: no class labels (background only)"]
    # Their CAMs are all zero (no class present), so the CAM pseudo-label is background in the box.
    inside = torch.zeros(1, 4, 4, dtype=torch.bool)
    inside[:, 1:3] = True
    labels = cam_pseudo_labels(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2), inside, high=0.7, low=0.25)
    assert (labels[inside] == 0).all() and (labels[~inside] == IGNORE_INDEX).all()


def test_data_check_reports_every_case_in_one_pass(tmp_path, capsys):
    rows = [
        "ok.png,cat",
        "corrupt.png,cat",
        "values.png,cat",
        "size.png,cat",
        "empty.png,",
        "ok.png,dog",
        "ok2.png,cat;horse",
        "../out.png,cat",
        "ok3.png,cat,dog",
    ]
    root = folder_dataset(tmp_path / "ds", rows, names=("ok", "corrupt", "values", "size", "empty"))
    (root / "images" / "corrupt.png").write_bytes(b"not an image")
    write_mask(root / "masks" / "values.png", square_mask(9))
    write_mask(root / "masks" / "size.png", square_mask(1, size=(4, 4)))
    write_mask(root / "masks" / "empty.png", np.zeros(SIZE[::-1], np.uint8))
    code, problems, warnings = check_problems(capsys, root)
    expected = [
        "train.csv:7: image 'ok' is already listed at",
        "train.csv:8: unknown class name(s) ['horse']",
        "train.csv:9: image path '../out.png' leaves the dataset directory",
        "train.csv:10: more fields",
        "corrupt.png: cannot read image",
        "values.png: mask values [9]",
        "size.png: mask is (4, 4)",
    ]
    assert code == 1 and len(problems) == len(expected)
    for fragment, problem in zip(expected, problems):
        assert fragment in problem
    assert len(warnings) == 2 and "empty.png: no class labels" in warnings[0] and "class dog of" in warnings[1]


# --- checkpoints and config --------------------------------------------------------------------


def fake_checkpoint(path: Path, class_names: tuple[str, ...] = CLASSES) -> Path:
    """A cosa checkpoint of an untrained tiny network: what the trainer writes, without training."""
    cfg = load_config("demo", overrides=TINY_OVERRIDES)
    network = build_network(cfg.model, len(class_names), pretrained=False)
    save_checkpoint(
        path,
        {
            "config": asdict(cfg),
            "class_names": list(class_names),
            "iteration": 0,
            "online": network.state_dict(),
            "assignment": network.state_dict(),
            "thresholds": CplThresholds.from_config(cfg.method).state_dict(),
        },
    )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return fake_checkpoint(tmp_path_factory.mktemp("checkpoint") / "last.pt")


def with_stored(checkpoint: Path, path: Path, section: str, key: str, value) -> Path:
    """A copy of ``checkpoint`` at ``path`` whose stored config sets ``section.key`` to ``value``."""
    payload = torch.load(checkpoint, weights_only=True)
    node = payload["config"]
    for name in section.split("."):
        node = node[name]
    node[key] = value
    save_checkpoint(path, payload)
    return path


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        pytest.param(
            "data", "crop_size", 8, "bad value for config key 'data.crop_size': must be at least 16", id="invalid-value"
        ),
        pytest.param(
            "method.raw",
            "enabled",
            True,
            "'method.raw.enabled' is true, but recipe cam-only ignores it",
            id="ignored-technique",
        ),
    ],
)
def test_a_checkpoint_whose_config_is_invalid_is_refused_in_one_line(
    tmp_path, capsys, checkpoint, section, key, value, message
):
    path = with_stored(checkpoint, tmp_path / "bad.pt", section, key, value)
    if key == "enabled":
        with_stored(path, path, "method", "recipe", "cam-only")
    for command in (
        ["evaluate", "--checkpoint", path, "--data", good_dataset(tmp_path / "ds"), "--split", "train"],
        ["predict", "--checkpoint", path, tmp_path / "ds" / "images", "--out", tmp_path / "o"],
    ):
        line = cli_error(capsys, *command)
        assert f"{path} (config): " in line and message in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("recipe", ["cam-only", "supervised"])
@pytest.mark.parametrize("technique", ["threshold_search", "raw", "contrastive"])
def test_train_refuses_a_technique_the_recipe_ignores_in_one_line(tmp_path, capsys, recipe, technique):
    data, out = good_dataset(tmp_path / "ds"), tmp_path / "run"
    line = cli_error(
        capsys,
        "train",
        "--config",
        "demo",
        "--recipe",
        recipe,
        "--data",
        data,
        "--out",
        out,
        f"method.{technique}.enabled=true",
    )
    assert f"config key 'method.{technique}.enabled' is true, but recipe {recipe} ignores it" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda p, good: p.write_bytes(b"\x00garbage" * 8), "not a PyTorch checkpoint", id="garbage"),
        pytest.param(lambda p, good: p.write_bytes(good.read_bytes()[:4000]), "cannot read checkpoint", id="truncated"),
        pytest.param(lambda p, good: torch.save({"state_dict": {}}, p), "not a cosa checkpoint", id="other-torch-file"),
        pytest.param(
            lambda p, good: save_checkpoint(p, {"iteration": 3}),
            "checkpoint lacks the entries config",
            id="missing-entries",
        ),
    ],
)
def test_wrong_or_truncated_checkpoint_is_fatal(tmp_path, capsys, checkpoint, damage, message):
    path = tmp_path / "bad.pt"
    damage(path, checkpoint)
    line = cli_error(
        capsys, "evaluate", "--checkpoint", path, "--data", good_dataset(tmp_path / "ds"), "--split", "train"
    )
    assert str(path) in line and message in line


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        pytest.param(("cat", "dog", "bird"), "the model has 2 classes but {root} has 3", id="count"),
        pytest.param(("cat", "fox"), "label 2 is 'dog' for the model but 'fox' in {root}", id="names"),
    ],
)
def test_evaluate_refuses_a_dataset_with_other_classes(tmp_path, capsys, checkpoint, classes, message):
    root = good_dataset(tmp_path / "ds")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    line = cli_error(capsys, "evaluate", "--checkpoint", checkpoint, "--data", root, "--split", "train")
    assert line == f"cosa: error: {checkpoint}: " + message.format(root=root)


def test_evaluate_stops_at_a_bad_mask_with_one_line(tmp_path, capsys, checkpoint):
    root = good_dataset(tmp_path / "ds")
    write_mask(root / "masks" / "b.png", square_mask(1, size=(8, 8)))
    line = cli_error(capsys, "evaluate", "--checkpoint", checkpoint, "--data", root, "--split", "train")
    assert line.endswith(f"{root / 'masks' / 'b.png'}: mask is (8, 8) but its image is (16, 20)")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.crop_size=abc", "data.crop_size"),  # type
        ("train.monitor_cpl=maybe", "train.monitor_cpl"),
        ("data.scale_range=[0.5]", "data.scale_range"),  # length
        ("data.blur_probability=1.5", "data.blur_probability"),  # ranges
        ("optim.betas=[0.9,1.5]", "optim.betas"),
        ("model.decoder_channels=0", "model.decoder_channels"),
        ("method.c2s_weight=-1", "method.c2s_weight"),
        ("eval.max_images=0", "eval.max_images"),
        ("train.iteratons=5", "train.iteratons"),  # unknown key
    ],
)
def test_invalid_config_values_name_the_key(override, key):
    with pytest.raises(CosaError) as error:
        load_config("demo", overrides=[override])
    one_line(error, f"'{key}'")


def test_invalid_config_file_value_names_the_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("base: demo\ntrain:\n  batch_size: many\n")
    with pytest.raises(CosaError) as error:
        load_config(str(path))
    one_line(error, path, "'train.batch_size'")


# --- security ----------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["../a.png", "images/../../a.png", "/etc/passwd", "/tmp/../etc/passwd"])
def test_csv_paths_leaving_the_root_are_refused(tmp_path, capsys, entry):
    root = folder_dataset(tmp_path / "ds", [f"{entry},cat", "b.png,cat"])
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, f"{root / 'train.csv'}:2", f"image path '{entry}' leaves the dataset directory")
    only_problem(capsys, root, "leaves the dataset directory")


@pytest.mark.parametrize("layout", ["voc", "coco"])
def test_list_entries_with_dotdot_are_refused(tmp_path, capsys, layout):
    if layout == "voc":
        root = voc_dataset(tmp_path / "voc", ["x1", "../../JPEGImages/x2.jpg"])
        listing, split = root / "ImageSets" / "Segmentation" / "train_aug.txt", "train_aug"
    else:
        root = tmp_path / "coco"
        for seed, year in enumerate(("train2014", "val2014")):  # two pictures: a copy in both splits is a problem
            write_rgb(root / year / "x1.jpg", seed=seed)
            write_mask(root / "SegmentationClass" / year / "x1.png", square_mask(1))
        listing, split = root / "val.txt", "val"
        listing.write_text("x1\n../secret\n")
    with pytest.raises(CosaError) as error:
        load_split(root, split)
    one_line(error, f"{listing}:2", "leaves the dataset directory")
    only_problem(capsys, root, f"{listing}:2")


def test_absolute_sbd_entries_only_name_files_inside_the_root(tmp_path):
    """SBD lists write '/JPEGImages/x.jpg': only the stem is used, so the file comes from ROOT."""
    secret = tmp_path / "secret.jpg"
    write_rgb(secret)
    root = voc_dataset(tmp_path / "voc", ["x1", f"{secret} {tmp_path / 'secret.png'}"])
    with pytest.raises(CosaError) as error:
        load_split(root, "train_aug")
    one_line(error, f"{root / 'JPEGImages' / 'secret'}.jpg: image listed in split 'train_aug' not found")


class WritesMarker:
    """Unpickling this would create ``path``: a stand-in for any code in a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda path, evil: path.write_bytes(pickle.dumps(evil, protocol=2)), id="plain-pickle"),
        pytest.param(
            lambda path, evil: torch.save({"format": "cosa-checkpoint", "config": evil}, path), id="torch-save"
        ),
    ],
)
def test_checkpoint_pickle_with_code_is_refused_not_run(tmp_path, capsys, write):
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(WritesMarker(marker))).close()
    assert marker.exists()  # the payload is live: plain unpickling runs it
    marker.unlink()
    path = tmp_path / "evil.pt"
    write(path, WritesMarker(marker))
    line = cli_error(capsys, "evaluate", "--checkpoint", path, "--data", tmp_path)
    assert f"{path}: cannot read checkpoint" in line
    assert not marker.exists()


def test_yaml_python_tags_are_refused_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.yaml"
    path.write_text(f"train:\n  device: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CosaError) as error:
        load_config(str(path))
    one_line(error, path, "not a valid YAML config")
    assert not marker.exists()


@pytest.mark.slow
def test_import_and_help_open_no_network_connection():
    script = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args[1:] or args)
    raise OSError("network disabled by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
import cosa
from cosa.cli.main import main
try:
    main(["--help"])
except SystemExit as done:
    assert done.code == 0, done.code
print("network attempts:", attempts)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "network attempts: []" in result.stdout and "usage: cosa" in result.stdout


# --- second pass: paths that name the wrong kind of thing ------------------------------------------


def test_a_dataset_path_that_is_a_file_is_named_a_file(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    line = cli_error(capsys, "data", "check", root / "classes.txt")
    assert line == f"cosa: error: {root / 'classes.txt'}: is a file, not a dataset folder"


def test_the_images_folder_given_as_the_dataset_points_to_the_root(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    line = cli_error(capsys, "data", "check", root / "images")
    assert "cannot tell the dataset layout" in line and f"(is the dataset root {root}?)" in line


@pytest.mark.parametrize("what", ["checkpoints folder", "run folder"])
def test_a_checkpoint_path_that_is_a_folder_is_named_a_folder(tmp_path, capsys, checkpoint, what):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, run / "checkpoints" / "last.pt")
    given = run if what == "run folder" else run / "checkpoints"
    line = cli_error(capsys, "evaluate", "--checkpoint", given, "--data", good_dataset(tmp_path / "ds"))
    assert f"{given}: is a folder, not a checkpoint" in line
    if what == "run folder":
        assert f"(its last checkpoint is {run / 'checkpoints' / 'last.pt'})" in line


def test_an_empty_checkpoint_file_is_named_empty(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    line = cli_error(capsys, "evaluate", "--checkpoint", tmp_path / "empty.pt", "--data", good_dataset(tmp_path / "ds"))
    assert line == f"cosa: error: {tmp_path / 'empty.pt'}: cannot read checkpoint (the file is empty)"


def test_a_tags_row_with_more_fields_than_the_header_is_refused(tmp_path):
    from cosa.engine.predict import read_tags

    tags = tmp_path / "tags.csv"
    tags.write_text("image,labels\na.png,cat,dog\nb.png,dog\n")  # ',' instead of ';': 'dog' would be dropped
    with pytest.raises(CosaError) as error:
        read_tags(tags, ("cat", "dog"), ["a", "b"])
    one_line(error, f"{tags}:2: more fields than the header's 2 (separate class names with ';')")


def test_converting_a_cosa_checkpoint_says_it_needs_no_conversion(tmp_path, capsys, checkpoint):
    line = cli_error(capsys, "convert-official", checkpoint, tmp_path / "out.pt")
    assert f"{checkpoint}: is a cosa checkpoint already" in line and not (tmp_path / "out.pt").exists()
