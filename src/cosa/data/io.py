"""Reading and writing images and label masks, with one-line errors for bad files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cosa.errors import CosaError

IGNORE_INDEX = 255
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: entry k takes its colour from the bits of k, interleaved."""
    return _voc_palette(num_entries).copy()


@lru_cache(maxsize=4)
def _voc_palette(num_entries: int) -> np.ndarray:
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for index in range(num_entries):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


@contextmanager
def _reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn the ways a file can fail to decode into one-line errors naming the file.

    Besides ``OSError`` (truncated data) Pillow raises ``SyntaxError`` and ``ValueError`` for
    malformed headers, and ``DecompressionBombError`` (not an ``OSError``) when a header claims
    more than twice ``Image.MAX_IMAGE_PIXELS`` pixels; ``tests/test_properties.py`` fuzzes this.
    """
    try:
        yield
    except FileNotFoundError:
        raise CosaError(f"{path}: {what} file not found") from None
    except UnidentifiedImageError:
        raise CosaError(f"{path}: cannot read {what} (not an image, or a format Pillow does not know)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CosaError(f"{path}: cannot read {what} ({error})") from None


def read_image(path: str | Path, exif_orientation: bool = True) -> torch.Tensor:
    """Read an image as a 3×H×W uint8 RGB tensor, by default applying its EXIF orientation.

    With ``exif_orientation=False`` the pixels come in stored order, which is the order the VOC
    and COCO masks use (see :attr:`DatasetSplit.exif_orientation`). Grayscale, palette, RGBA
    (alpha dropped) and CMYK images are converted to RGB; 16-bit grayscale keeps its high byte
    (Pillow's own conversion would clip it to white).
    """
    with _reading(path, "image"), Image.open(path) as image:
        rgb = _rgb_pixels(ImageOps.exif_transpose(image) if exif_orientation else image)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def _rgb_pixels(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def read_mask(path: str | Path, num_classes: int | None = None) -> torch.Tensor:
    """Read a label mask as an H×W uint8 tensor (0 background, 1..C classes, 255 ignore).

    Palette and grayscale PNGs are read by index value, in stored pixel order: a mask has no EXIF
    orientation, so in the folder layout it must match its image as displayed (after the image's
    EXIF rotation); VOC and COCO images are read as stored, like their masks.
    Values that do not fit 0..255 are an error (never wrapped); with ``num_classes`` given, so
    are values outside 0..C and 255.
    """
    with _reading(path, "mask"), Image.open(path) as image:
        if image.mode not in ("P", "L", "I", *_SIXTEEN_BIT_MODES):
            raise CosaError(f"{path}: a mask must be a palette or grayscale PNG, got mode {image.mode}")
        values = np.asarray(image)
    if values.dtype != np.uint8 and (values.min() < 0 or values.max() > IGNORE_INDEX):
        raise CosaError(f"{path}: mask values {values.min()}..{values.max()} do not fit 0..{IGNORE_INDEX}")
    if num_classes is not None:
        bad = (values > num_classes) & (values != IGNORE_INDEX)
        if bad.any():
            raise CosaError(
                f"{path}: mask values {sorted(np.unique(values[bad]).tolist())[:5]} are outside "
                f"0..{num_classes} and {IGNORE_INDEX}"
            )
    return torch.from_numpy(values.astype(np.uint8))


def write_mask(path: str | Path, mask: np.ndarray | torch.Tensor) -> None:
    """Write an H×W label mask as a VOC-palette PNG."""
    values = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    image = Image.fromarray(values.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
