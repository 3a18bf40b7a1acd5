"""Properties of the metric and the two pseudo-labels (hypothesis), and a fuzz test of the readers.

The hypothesis tests are derandomised (the same examples on every run) and small enough that the
file runs in well under a minute on one thread, fuzz test included.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from cosa.data.io import IGNORE_INDEX, read_image, read_mask
from cosa.engine.metrics import ConfusionMatrix
from cosa.errors import CosaError
from cosa.method.pseudo_labels import cam_pseudo_labels, segmentation_pseudo_labels

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)


# --- the confusion matrix ----------------------------------------------------------------------


@st.composite
def label_maps(draw) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """A label count and 1–3 (prediction, target) maps of 1–6 px a side, both with ignore pixels."""
    num_labels = draw(st.integers(2, 6))
    values = st.sampled_from([*range(num_labels), IGNORE_INDEX])
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        shape = draw(st.tuples(st.integers(1, 6), st.integers(1, 6)))
        pairs.append((draw(arrays(np.int64, shape, elements=values)), draw(arrays(np.int64, shape, elements=values))))
    return num_labels, pairs


def brute_force(pairs: list[tuple[np.ndarray, np.ndarray]], num_labels: int) -> tuple[list[float], float]:
    """Per-label IoU (NaN for labels absent from the ground truth) and pixel accuracy, pixel by pixel.

    Like the matrix, a pixel counts only where neither the target nor the prediction is ignore.
    """
    pixels = [
        (p, t)
        for prediction, target in pairs
        for p, t in zip(prediction.flat, target.flat)
        if IGNORE_INDEX not in (p, t)
    ]
    ious = []
    for label in range(num_labels):
        true_positive = sum(p == t == label for p, t in pixels)
        false_positive = sum(p == label != t for p, t in pixels)
        false_negative = sum(t == label != p for p, t in pixels)
        occurs = any(t == label for _, t in pixels)
        ious.append(true_positive / (true_positive + false_positive + false_negative) if occurs else math.nan)
    accuracy = sum(p == t for p, t in pixels) / len(pixels) * 100 if pixels else math.nan
    return ious, accuracy


@PROPERTY
@given(label_maps())
def test_confusion_matrix_matches_a_brute_force_count(case):
    num_labels, pairs = case
    matrix = ConfusionMatrix(num_labels)
    for prediction, target in pairs:
        matrix.update(torch.from_numpy(prediction), torch.from_numpy(target))
    ious, accuracy = brute_force(pairs, num_labels)
    np.testing.assert_allclose(matrix.iou().numpy(), ious, rtol=1e-12, equal_nan=True)
    occurring = [iou for iou in ious if not math.isnan(iou)]
    expected_miou = sum(occurring) / len(occurring) * 100 if occurring else math.nan
    np.testing.assert_allclose(matrix.mean_iou(), expected_miou, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(matrix.pixel_accuracy(), accuracy, rtol=1e-6, equal_nan=True)


# --- the CAM pseudo-label (CPL) ----------------------------------------------------------------


@st.composite
def cpl_inputs(draw, distinct: bool = False) -> dict:
    """CAMs in [0, 1] with absent classes at 0, the class labels, a crop box per image, thresholds.

    With ``distinct`` the CAM values of one pixel never tie: value = (code·C + class) / (1000·C).
    Sizes are even because the released resampling halves them.
    """
    batch, classes = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    height, width = 2 * draw(st.integers(1, 4)), 2 * draw(st.integers(1, 4))
    shape = (batch, classes, height, width)
    if distinct:
        codes = draw(arrays(np.int64, shape, elements=st.integers(0, 999)))
        cams = (codes * classes + np.arange(classes)[None, :, None, None]) / (1000 * classes)
    else:
        cams = draw(arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
    labels = draw(arrays(np.bool_, (batch, classes)))
    inside = np.zeros((batch, height, width), bool)
    for image in range(batch):
        top = draw(st.integers(0, height))
        left = draw(st.integers(0, width))
        inside[image, top : draw(st.integers(top, height)), left : draw(st.integers(left, width))] = True
    low = draw(st.floats(0, 0.9))
    high = draw(st.floats(low + 0.01, 1))
    return {
        "cams": torch.from_numpy(cams * labels[:, :, None, None]).float(),
        "labels": torch.from_numpy(labels),
        "inside": torch.from_numpy(inside),
        "high": high,
        "low": low,
    }


@PROPERTY
@given(cpl_inputs())
def test_cpl_labels_present_classes_or_background_and_ignores_outside_the_box(case):
    pseudo = cam_pseudo_labels(case["cams"], case["labels"], case["inside"], case["high"], case["low"])
    for image, present in enumerate(case["labels"]):
        allowed = {0, IGNORE_INDEX} | {int(k) + 1 for k in present.nonzero().flatten()}
        assert set(pseudo[image].unique().tolist()) <= allowed
    assert (pseudo[~case["inside"]] == IGNORE_INDEX).all()


# --- the segmentation pseudo-label (SPL) -------------------------------------------------------


@st.composite
def spl_inputs(draw) -> tuple[torch.Tensor, torch.Tensor, float]:
    batch, classes, side = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    logits = draw(arrays(np.float32, (batch, classes + 1, side, side), elements=st.floats(-30, 30, width=32)))
    labels = draw(arrays(np.bool_, (batch, classes)))
    temperature = draw(st.floats(0.01, 2))
    return torch.from_numpy(logits), torch.from_numpy(labels).float(), temperature


@PROPERTY
@given(spl_inputs(), st.data())
def test_spl_is_a_distribution_over_present_classes_and_equivariant(case, data):
    logits, labels, temperature = case
    q = segmentation_pseudo_labels(logits, labels, temperature)
    absent = (labels == 0)[:, :, None, None].expand_as(q[:, 1:])
    assert (q[:, 1:][absent] == 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones_like(q[:, 0]), rtol=0, atol=1e-5)
    order = data.draw(st.permutations(range(labels.shape[1])))
    channels = [0, *(1 + k for k in order)]  # background stays first
    permuted = segmentation_pseudo_labels(logits[:, channels], labels[:, order], temperature)
    torch.testing.assert_close(permuted, q[:, channels], rtol=0, atol=1e-6)


# --- fuzzing the image and mask readers --------------------------------------------------------

MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP")


def valid_files(rng: np.random.Generator) -> list[bytes]:
    """Small valid images in the formats and modes datasets hold, some with EXIF orientation."""
    pixels = rng.integers(0, 255, (12, 17, 3), dtype=np.uint8)
    rgb = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    images = [
        (rgb, "PNG", {}),
        (rgb, "JPEG", {}),
        (rgb, "JPEG", {"exif": exif}),
        (rgb.convert("P"), "PNG", {}),
        (rgb.convert("L"), "PNG", {}),
        (rgb.convert("RGBA"), "PNG", {"exif": exif}),
        (rgb.convert("CMYK"), "JPEG", {}),
        (Image.fromarray(pixels[..., 0].astype(np.uint16) * 257), "PNG", {}),
        (rgb, "GIF", {}),
        (rgb, "BMP", {}),
        (rgb, "TIFF", {}),
        (rgb, "WEBP", {}),
    ]
    files = []
    for image, image_format, options in images:
        buffer = io.BytesIO()
        image.save(buffer, image_format, **options)
        files.append(buffer.getvalue())
    return files


def fuzz_inputs(seed: int, random_count: int, mutated_count: int):
    """``random_count`` random byte strings (half behind a format's magic number), then
    ``mutated_count`` valid files, each truncated or with 1–8 bytes overwritten."""
    rng = np.random.default_rng(seed)
    for index in range(random_count):
        noise = rng.bytes(int(rng.integers(0, 512)))
        yield MAGIC[index % len(MAGIC)] + noise if index % 2 else noise
    files = valid_files(rng)
    for index in range(mutated_count):
        data = bytearray(files[index % len(files)])
        if index % 2:
            yield bytes(data[: int(rng.integers(0, len(data)))])
        else:
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                data[position] = int(rng.integers(0, 256))
            yield bytes(data)


def outcome(read, expected_dims: int) -> str:
    """'ok' for a uint8 tensor of the documented rank, 'refused' for a one-line CosaError."""
    try:
        tensor = read()
    except CosaError as error:
        assert "\n" not in str(error)
        return "refused"
    assert tensor.dtype == torch.uint8 and tensor.ndim == expected_dims and min(tensor.shape) >= 1
    assert expected_dims == 2 or tensor.shape[0] == 3
    return "ok"


def test_readers_return_a_tensor_or_raise_cosa_error_on_any_bytes(tmp_path, monkeypatch):
    # Keep every decode small: headers that claim more than 2 MP must be refused, not decoded.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    path = tmp_path / "fuzzed"
    counts = {"ok": 0, "refused": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and the like
        for index, data in enumerate(fuzz_inputs(seed=20240917, random_count=2000, mutated_count=2000)):
            path.write_bytes(data)
            counts[outcome(lambda: read_image(path), 3)] += 1
            classes = 20 if index % 2 else None
            counts[outcome(lambda: read_mask(path, num_classes=classes), 2)] += 1  # noqa: B023 - called at once
    assert counts["ok"] > 100 and counts["refused"] > 1000  # both paths were exercised
