"""The two pixel-aligned training views of the released pipeline.

One geometric draw per image (rescale, flip, crop with black padding) gives a crop and the box of
real pixels inside it. The *weak* view (for the assignment network) is that crop, blurred with
probability ``blur_probability``; the *strong* view (for the online network) is the weak view
plus one photometric operation. Both views therefore share every pixel position exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode

from cosa.data.io import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTOMETRIC_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "posterize",
)


@dataclass(frozen=True)
class ViewParams:
    """One random draw of the view pipeline; applying it is deterministic."""

    scale: float
    flip: bool
    image_offset: tuple[int, int]  # top-left of the rescaled image on the zero-padded canvas
    crop_origin: tuple[int, int]  # top-left of the crop on that canvas
    blur_radius: float | None  # PIL's GaussianBlur radius
    operation: str
    magnitude: int  # 1..9 of 10


def sample_view_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    crop_size: int,
    scale_range: tuple[float, float] = (0.5, 2.0),
    blur_probability: float = 0.5,
) -> ViewParams:
    scale = float(rng.uniform(*scale_range))
    scaled_h, scaled_w = scaled_size(height, width, scale)
    canvas_h, canvas_w = max(crop_size, scaled_h), max(crop_size, scaled_w)
    image_offset = (int(rng.integers(0, canvas_h - scaled_h + 1)), int(rng.integers(0, canvas_w - scaled_w + 1)))
    crop_origin = (int(rng.integers(0, canvas_h - crop_size + 1)), int(rng.integers(0, canvas_w - crop_size + 1)))
    flip = bool(rng.random() < 0.5)
    blur_radius = float(rng.uniform(0.1, 2.0)) if rng.random() < blur_probability else None
    operation = PHOTOMETRIC_OPS[int(rng.integers(len(PHOTOMETRIC_OPS)))]
    magnitude = int(rng.integers(1, 10))
    return ViewParams(scale, flip, image_offset, crop_origin, blur_radius, operation, magnitude)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Rounded down, as the released rescaling does."""
    return max(1, int(height * scale)), max(1, int(width * scale))


def crop_box(params: ViewParams, height: int, width: int, crop_size: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the real image pixels inside the crop, bottom/right exclusive."""
    scaled_h, scaled_w = scaled_size(height, width, params.scale)
    (image_top, image_left), (crop_top, crop_left) = params.image_offset, params.crop_origin
    top = max(image_top, crop_top) - crop_top
    left = max(image_left, crop_left) - crop_left
    bottom = min(image_top + scaled_h, crop_top + crop_size) - crop_top
    right = min(image_left + scaled_w, crop_left + crop_size) - crop_left
    return top, bottom, left, right


def through_pil(image: torch.Tensor, operation: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """``operation`` applied by PIL to a uint8 3×H×W image. The released pipeline rescales and
    blurs with PIL, whose filters torchvision's approximate (its antialiased bilinear differs by 1
    on up to 0.2% of the pixels; its Gaussian blur is exact where PIL's is three box filters)."""
    result = operation(Image.fromarray(image.permute(1, 2, 0).numpy()))
    return torch.from_numpy(np.asarray(result).copy()).permute(2, 0, 1)


def rescale_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A uint8 image resized to ``size`` (height, width) by PIL's bilinear filter, as released."""
    return through_pil(image, lambda pil: pil.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def blur_image(image: torch.Tensor, radius: float) -> torch.Tensor:
    """A uint8 image blurred by PIL's ``GaussianBlur(radius)``, as released."""
    return through_pil(image, lambda pil: pil.filter(ImageFilter.GaussianBlur(radius=radius)))


def apply_geometry(
    tensor: torch.Tensor, params: ViewParams, crop_size: int, fill: int, interpolation: InterpolationMode
) -> torch.Tensor:
    """Rescale (bilinear: an image, :func:`rescale_image`; nearest: a mask), flip and crop a
    C×H×W tensor; pixels outside the image get ``fill``."""
    height, width = tensor.shape[-2:]
    size = scaled_size(height, width, params.scale)
    if interpolation == InterpolationMode.BILINEAR:
        tensor = rescale_image(tensor, size)
    else:
        tensor = TF.resize(tensor, list(size), interpolation=interpolation)
    if params.flip:
        tensor = TF.horizontal_flip(tensor)
    top, bottom, left, right = crop_box(params, height, width, crop_size)
    source_top = params.crop_origin[0] + top - params.image_offset[0]
    source_left = params.crop_origin[1] + left - params.image_offset[1]
    crop = torch.full((tensor.shape[0], crop_size, crop_size), fill, dtype=tensor.dtype)
    crop[:, top:bottom, left:right] = tensor[
        :, source_top : source_top + bottom - top, source_left : source_left + right - left
    ]
    return crop


def photometric(image: torch.Tensor, operation: str, magnitude: int) -> torch.Tensor:
    """One operation of the released pipeline on a uint8 image; magnitude m in 1..9 of 10.

    The pixels are PIL's, which the released pipeline calls (docs/method.md, "The data pipeline"):
    its thresholds and bit counts truncate m·max/10, and its enhancers blend with a degenerate
    image by truncating ``d + f·(x − d)``, with f = 0.1 + 1.8·m/10.
    """
    factor = float(magnitude) * 1.8 / 10 + 0.1
    if operation == "identity":
        return image
    if operation == "autocontrast":
        return _autocontrast(image)
    if operation == "equalize":
        return TF.equalize(image)
    if operation == "solarize":
        return TF.solarize(image, threshold=min(int(magnitude * 256 / 10), 255))
    if operation == "color":
        return _blend(_luminance(image).expand_as(image), image, factor)
    if operation == "contrast":
        mean = int(_luminance(image).double().mean() + 0.5)  # the mean grey, rounded to a level
        return _blend(torch.full_like(image, mean), image, factor)
    if operation == "brightness":
        return _blend(torch.zeros_like(image), image, factor)
    if operation == "sharpness":
        return _blend(_smoothed(image), image, factor)
    if operation == "posterize":
        return TF.posterize(image, bits=4 - int(magnitude * 4 / 10))
    raise ValueError(f"unknown photometric operation {operation!r}")


def _autocontrast(image: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.autocontrast``: each channel's range stretched to 0–255 by a table
    int(x·255/(hi − lo) − lo·255/(hi − lo)), computed in double precision."""
    levels = torch.arange(256, dtype=torch.float64)
    channels = []
    for channel in image:
        low, high = int(channel.min()), int(channel.max())
        if high <= low:
            channels.append(channel)
            continue
        scale = 255.0 / (high - low)
        table = (levels * scale + -low * scale).trunc().clamp(0, 255).to(torch.uint8)
        channels.append(table[channel.long()])
    return torch.stack(channels)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)``: d + f·(x − d) in float32, clipped, truncated."""
    factor = torch.tensor(factor, dtype=torch.float32)
    low = degenerate.float()
    return (low + factor * (image.float() - low)).clamp(0, 255).to(torch.uint8)


def _luminance(image: torch.Tensor) -> torch.Tensor:
    """PIL's RGB → L of a uint8 image: (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16, as 1×H×W uint8."""
    red, green, blue = image.int()
    return ((19595 * red + 38470 * green + 7471 * blue + 32768) >> 16).to(torch.uint8)[None]


def _smoothed(image: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter: the 3×3 kernel [1 1 1; 1 5 1; 1 1 1]/13, rounded; the border kept."""
    kernel = torch.ones(3, 3)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(image.shape[0], 1, 3, 3)
    smooth = torch.nn.functional.conv2d(image.float()[None], kernel, groups=image.shape[0])[0]
    result = image.clone()
    result[:, 1:-1, 1:-1] = (smooth + 0.5).floor().clamp(0, 255).to(torch.uint8)
    return result


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 3×H×W (or B×3×H×W) → float, ImageNet mean/std."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.float() / 255.0 - mean) / std


def make_views(
    image: torch.Tensor, mask: torch.Tensor | None, params: ViewParams, crop_size: int
) -> dict[str, torch.Tensor]:
    """Weak and strong normalised views, the box, and the cropped mask.

    As released, the padding is black (RGB 0) before normalisation, and the strong view's
    photometric operation sees the padded crop (its histogram includes the black pixels).
    """
    height, width = image.shape[-2:]
    box = crop_box(params, height, width, crop_size)
    weak = apply_geometry(image, params, crop_size, fill=0, interpolation=InterpolationMode.BILINEAR)
    if params.blur_radius is not None:
        weak = blur_image(weak, params.blur_radius)
    strong = photometric(weak, params.operation, params.magnitude)
    views = {
        "weak": normalize(weak),
        "strong": normalize(strong),
        "box": torch.tensor(box, dtype=torch.long),
    }
    if mask is not None:
        views["mask"] = apply_geometry(
            mask.unsqueeze(0), params, crop_size, fill=IGNORE_INDEX, interpolation=InterpolationMode.NEAREST
        )[0].long()
    return views
