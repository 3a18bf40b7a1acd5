"""Pictures: coloured masks, CAM heat maps, overlays, labelled image grids and PNG bytes (PIL + numpy)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from cosa.data.io import IGNORE_INDEX, voc_palette

IGNORE_COLOUR = (224, 224, 192)  # VOC's boundary colour for "ignore"
FIGURE_DPI = 110


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """3×H×W uint8 tensor → H×W×3 array."""
    return image.permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def colorize(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    values = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    palette = voc_palette()
    palette[IGNORE_INDEX] = IGNORE_COLOUR
    return palette[values.astype(np.uint8)]


def heatmap(cam: torch.Tensor | np.ndarray) -> np.ndarray:
    """H×W values in [0, 1] → H×W×3 jet colours."""
    values = cam.cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam)
    return (colormaps["jet"](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def blend(image: np.ndarray, layer: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + layer.astype(np.float32) * alpha).astype(np.uint8)


def overlay(image: np.ndarray, mask: torch.Tensor | np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Mask colours blended over an H×W×3 image where the mask is not background.

    Background keeps the image as it is: blending VOC's black background would only darken it.
    """
    values = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return np.where((values != 0)[..., None], blend(image, colorize(values), alpha), image)


def image_grid(rows: list[list[np.ndarray]], titles: list[str], cell: int = 160) -> Image.Image:
    """A grid of equally sized cells with column titles on top."""
    header = 18
    columns = max(len(row) for row in rows)
    canvas = Image.new("RGB", (columns * cell, header + len(rows) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(titles):
        draw.text((column * cell + 4, 3), title, fill="black")
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            tile = Image.fromarray(picture).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (c * cell, header + r * cell))
    return canvas


def _image(picture: np.ndarray | Image.Image) -> Image.Image:
    return picture if isinstance(picture, Image.Image) else Image.fromarray(picture)


def save_picture(path: str | Path, picture: np.ndarray | Image.Image) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _image(picture).save(path)


def png_bytes(picture: np.ndarray | Image.Image | Figure) -> bytes:
    """A picture or a matplotlib figure as the bytes of a PNG file, e.g. to embed in a page."""
    buffer = io.BytesIO()
    if isinstance(picture, Figure):
        picture.savefig(buffer, format="png", dpi=FIGURE_DPI)
    else:
        _image(picture).save(buffer, format="PNG")
    return buffer.getvalue()
