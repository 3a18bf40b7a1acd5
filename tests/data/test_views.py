"""The two views: one geometry, pixel-aligned, with the crop box of real pixels."""

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torchvision.transforms import InterpolationMode

from cosa.data.io import IGNORE_INDEX
from cosa.data.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PHOTOMETRIC_OPS,
    ViewParams,
    apply_geometry,
    crop_box,
    make_views,
    normalize,
    photometric,
    sample_view_params,
)

CROP = 32


def coordinate_image(height, width):
    """Red = row, green = column: every pixel says where it came from."""
    rows = torch.arange(height).view(-1, 1).expand(height, width)
    cols = torch.arange(width).view(1, -1).expand(height, width)
    return torch.stack([rows, cols, torch.full_like(rows, 200)]).to(torch.uint8)


def unnormalized(view):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((view * std + mean) * 255).round()


def test_scale_one_crop_maps_every_pixel_back_to_its_source():
    image = coordinate_image(40, 50)
    params = ViewParams(1.0, False, (0, 0), (5, 11), None, "identity", 1)
    views = make_views(image, None, params, CROP)
    top, bottom, left, right = views["box"].tolist()
    assert (top, bottom, left, right) == (0, CROP, 0, CROP)
    pixels = unnormalized(views["weak"])
    assert torch.equal(pixels[0], torch.arange(5, 5 + CROP).view(-1, 1).float().expand(CROP, CROP))
    assert torch.equal(pixels[1], torch.arange(11, 11 + CROP).view(1, -1).float().expand(CROP, CROP))


def test_flip_and_padding_are_recorded_in_the_box():
    image = coordinate_image(20, 24)  # smaller than the crop: padded
    params = ViewParams(1.0, True, (3, 5), (0, 0), None, "identity", 1)
    views = make_views(image, None, params, CROP)
    assert views["box"].tolist() == [3, 23, 5, 29]
    pixels = unnormalized(views["weak"])
    assert pixels[1, 3, 5].item() == 23 and pixels[1, 3, 28].item() == 0  # flipped columns
    outside = torch.ones(CROP, CROP, dtype=torch.bool)
    outside[3:23, 5:29] = False
    for view in (views["weak"], views["strong"]):  # black padding, as released
        assert (unnormalized(view)[:, outside] == 0).all()


def test_the_strong_view_transforms_the_padded_crop():
    """As released, the photometric operation sees the black padding: autocontrast stretches from 0."""
    image = torch.full((3, 20, 24), 100, dtype=torch.uint8)
    image[:, :, 12:] = 200
    params = ViewParams(1.0, False, (3, 5), (0, 0), None, "autocontrast", 1)
    views = make_views(image, None, params, CROP)
    pixels = unnormalized(views["strong"])
    assert pixels[:, 3, 5].tolist() == [127.0] * 3 and (pixels[:, 0, 0] == 0).all()  # 100 · 255/200
    assert photometric(image, "autocontrast", 1)[:, 0, 0].tolist() == [0] * 3  # without the padding: 0
    padded = torch.zeros(3, CROP, CROP, dtype=torch.uint8)
    padded[:, 3:23, 5:29] = image
    assert torch.equal(views["strong"], normalize(photometric(padded, "autocontrast", 1)))


@pytest.mark.parametrize("seed", range(6))
def test_weak_strong_and_mask_share_one_geometry(seed):
    rng = np.random.default_rng(seed)
    mask = torch.zeros(45, 61, dtype=torch.uint8)
    mask[5:30, 10:40] = 1
    mask[20:44, 35:60] = 2
    image = (mask * 100).expand(3, -1, -1).contiguous()  # the image is its own mask
    params = sample_view_params(rng, 45, 61, CROP, (0.5, 2.0), blur_probability=0.0)
    params = ViewParams(params.scale, params.flip, params.image_offset, params.crop_origin, None, "identity", 1)
    views = make_views(image, mask, params, CROP)
    top, bottom, left, right = views["box"].tolist()
    assert torch.equal(views["weak"], views["strong"])  # identity op: the views coincide
    inside = torch.zeros(CROP, CROP, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert torch.equal(views["mask"] != IGNORE_INDEX, inside)
    # Where all pixels within 2 share a mask label (away from resampling blur), the image shows it.
    values = unnormalized(views["weak"])[0] / 100
    labels = views["mask"]
    core = torch.zeros_like(inside)
    core[2:-2, 2:-2] = inside[2:-2, 2:-2]
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            core &= torch.roll(labels, (dy, dx), (0, 1)) == labels
    assert core.any()
    assert torch.allclose(values[core], labels[core].float(), atol=0.02)


@pytest.mark.parametrize("seed", range(20))
def test_box_is_where_real_pixels_are(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(10, 80)), int(rng.integers(10, 80))
    params = sample_view_params(rng, height, width, CROP, (0.5, 2.0), 0.0)
    params = ViewParams(params.scale, params.flip, params.image_offset, params.crop_origin, None, "identity", 1)
    white = torch.full((3, height, width), 255, dtype=torch.uint8)
    views = make_views(white, None, params, CROP)
    top, bottom, left, right = crop_box(params, height, width, CROP)
    real = unnormalized(views["weak"]).sum(0) > 0  # outside the box the padding is black
    assert bottom > top and right > left
    assert real.nonzero().min(0).values.tolist() == [top, left]
    assert real.nonzero().max(0).values.tolist() == [bottom - 1, right - 1]


@pytest.mark.parametrize("operation", PHOTOMETRIC_OPS)
def test_every_photometric_operation_keeps_shape_and_type(operation):
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    for magnitude in (1, 9):
        out = photometric(image, operation, magnitude)
        assert out.shape == image.shape and out.dtype == torch.uint8
    if operation == "identity":
        assert torch.equal(photometric(image, operation, 5), image)
    if operation == "solarize":
        assert torch.equal(photometric(image, operation, 9)[image >= 231], 255 - image[image >= 231])


def test_view_parameters_are_deterministic_per_seed():
    first = sample_view_params(np.random.default_rng([0, 1]), 100, 120, CROP)
    again = sample_view_params(np.random.default_rng([0, 1]), 100, 120, CROP)
    other = sample_view_params(np.random.default_rng([0, 2]), 100, 120, CROP)
    assert first == again and first != other
    assert 0.5 <= first.scale <= 2.0 and 1 <= first.magnitude <= 9


# --- each operation against the released pipeline's formula --------------------------------------
# The released pipeline calls PIL for these (and mmcv's solarize, written out below): PIL computes
# the expected pixels from the released parameters, never the released code.


def photographs() -> list[np.ndarray]:
    """Noise, smooth gradients and flat patches: ties, rounding and narrow ranges all occur."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:41, 0:57]
    smooth = np.stack([rows * 5, cols * 4, (rows + cols) * 2], axis=-1) % 256
    flat = np.full((23, 31, 3), (90, 130, 60)) + rng.integers(0, 7, (23, 31, 3))
    return [rng.integers(0, 256, (37, 53, 3)).astype(np.uint8), smooth.astype(np.uint8), flat.astype(np.uint8)]


def released_operation(image: Image.Image, operation: str, magnitude: int) -> np.ndarray:
    """The released RandAug operation at ``magnitude`` (1..9 of 10), from its formula."""
    factor = float(magnitude) * 1.8 / 10 + 0.1
    if operation == "solarize":  # mmcv.solarize at min(int(m·256/10), 255)
        pixels, threshold = np.asarray(image), min(int(magnitude * 256 / 10), 255)
        return np.where(pixels < threshold, pixels, 255 - pixels)
    released = {
        "identity": lambda: image,
        "autocontrast": lambda: ImageOps.autocontrast(image),
        "equalize": lambda: ImageOps.equalize(image),
        "color": lambda: ImageEnhance.Color(image).enhance(factor),
        "contrast": lambda: ImageEnhance.Contrast(image).enhance(factor),
        "brightness": lambda: ImageEnhance.Brightness(image).enhance(factor),
        "sharpness": lambda: ImageEnhance.Sharpness(image).enhance(factor),
        "posterize": lambda: ImageOps.posterize(image, 4 - int(magnitude * 4 / 10)),
    }
    return np.asarray(released[operation]())


@pytest.mark.parametrize("operation", PHOTOMETRIC_OPS)
def test_each_photometric_operation_gives_the_released_pixels(operation):
    for pixels in photographs():
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        for magnitude in range(1, 10):
            ours = photometric(image, operation, magnitude).permute(1, 2, 0).numpy()
            expected = released_operation(Image.fromarray(pixels), operation, magnitude)
            assert np.array_equal(ours, expected), f"{operation} at magnitude {magnitude}"


def test_solarize_and_posterize_truncate_their_parameters_as_released():
    """Magnitude 3: threshold int(76.8) = 76, so a pixel of 76 is inverted; bits 4 − int(1.2) = 3."""
    image = torch.tensor([75, 76, 200], dtype=torch.uint8).view(1, 1, 3).expand(3, 1, 3).contiguous()
    assert photometric(image, "solarize", 3)[0, 0].tolist() == [75, 179, 55]
    assert photometric(image, "posterize", 3)[0, 0].tolist() == [64, 64, 192]


@pytest.mark.parametrize("scale", [0.5, 0.73, 1.37, 2.0])
def test_rescaling_gives_the_pixels_of_the_released_bilinear_filter(scale):
    for pixels in photographs():
        height, width = pixels.shape[:2]
        params = ViewParams(scale, False, (0, 0), (0, 0), None, "identity", 1)
        crop = max(int(height * scale), int(width * scale))
        ours = apply_geometry(torch.from_numpy(pixels).permute(2, 0, 1), params, crop, 0, InterpolationMode.BILINEAR)
        size = (int(scale * width), int(scale * height))  # the released (width, height)
        expected = np.asarray(Image.fromarray(pixels).resize(size, resample=Image.Resampling.BILINEAR))
        assert np.array_equal(ours[:, : size[1], : size[0]].permute(1, 2, 0).numpy(), expected)


def test_normalisation_is_to_tensor_then_normalize_as_released():
    pixels = torch.from_numpy(photographs()[0]).permute(2, 0, 1)
    expected = TF.normalize(pixels.float() / 255, list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert torch.equal(normalize(pixels), expected)


def test_the_weak_view_is_the_crop_blurred_by_the_released_filter():
    pixels = photographs()[1]
    image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    sharp, blurred = (
        make_views(image, None, ViewParams(1.0, False, (0, 0), (2, 3), radius, "identity", 1), CROP)["weak"]
        for radius in (None, 1.3)
    )
    crop = unnormalized(sharp).permute(1, 2, 0).numpy().astype(np.uint8)
    expected = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(radius=1.3)))
    assert np.array_equal(unnormalized(blurred).permute(1, 2, 0).numpy(), expected)
