"""Reading images and masks: a corrupt file or a mask whose values are no labels is fatal, in one
line naming the file, and listed by ``cosa data check``; every image kind Pillow opens is read as
RGB. docs/reliability.md lists each case with the test that pins it."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosa.data.datasets import TrainingViews
from cosa.data.io import read_image, read_mask, write_mask
from cosa.data.layouts import load_split
from cosa.errors import CosaError

from conftest import (
    CLASSES,
    SIZE,
    check_problems,
    evaluation_item,
    folder_dataset,
    good_dataset,
    one_line,
    only_problem,
    square_mask,
)


def training_views(split, crop_size: int = 32) -> TrainingViews:
    return TrainingViews(split, crop_size, (0.5, 2.0), 0.5, seed=0, with_masks=split.has_masks)


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
