"""A deterministic synthetic dataset that is a real test of weak supervision.

Six foreground classes, each with its own shape, texture and colour family, vary per instance
(hue, scale, rotation, aspect ratio, texture frequency and phase; one object in five takes a
random hue) so that no single cue gives the class away. Backgrounds are cluttered with lines,
blobs and patches of the same textures the objects use. Two background *contexts* are tied to
classes — water to boats, rails to blocks — the way real data ties sea to boats and tracks to
trains: a classifier trained from image-level tags can score the class from its context, so its
activation maps leak into the context. Contexts are background (0) in the masks and are marked
separately in ``context/NAME.png`` so that this leakage can be measured.

The output is a ``folder`` dataset (see :mod:`cosa.data.layouts`). Every image draws from its
own generator seeded by ``(seed, split, index)``, so files do not depend on generation order and
the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cosa.config.schema import MAX_SEED
from cosa.data import SYNTHETIC_MIN_SIZE
from cosa.data.io import write_mask
from cosa.errors import CosaError
from cosa.outputs import OutputFolder

GENERATOR_VERSION = 1
CLASS_NAMES = ("ball", "block", "tent", "star", "ring", "boat")

_SPLIT_IDS = {"train": 0, "val": 1}
_OBJECT_COUNT_WEIGHTS = (0.45, 0.40, 0.15)  # P(1, 2, 3 objects)
_SCALE_RANGE = (0.15, 0.55)  # object extent as a fraction of the image side
_OFF_COLOUR_RATE = 0.2  # objects painted in a random hue, so colour alone is not enough
_CONTEXT_WITH_CLASS = 0.85  # P(context | its class is in the image)
_CONTEXT_WITHOUT_CLASS = 0.07  # P(context | its class is not)
_BOAT_DECK = 0.45  # local v coordinate where a boat's sails end and its hull begins

Array = np.ndarray


@dataclass(frozen=True)
class TiedContext:
    id: int  # value of its pixels in context/NAME.png
    name: str
    class_name: str  # the class it co-occurs with


CONTEXTS = (TiedContext(1, "water", "boat"), TiedContext(2, "rails", "block"))


@dataclass(frozen=True)
class SyntheticSummary:
    """What was written. A context counts as present with at least ``min_visible_pixels`` pixels."""

    root: Path
    class_names: tuple[str, ...]
    split_counts: dict[str, int]
    class_image_counts: dict[str, int]  # images containing each class, all splits
    context_rates: dict[str, tuple[float, float]]  # context -> (P(context | class), P(context | no class))


def min_visible_pixels(image_size: int) -> int:
    """Fewest visible pixels for a class to count as present: 40 at 128 px, scaled by area."""
    return max(4, round(40 * image_size * image_size / 128**2))


# --- colour -------------------------------------------------------------------------------------


def _hsv_to_rgb(hue, saturation, value) -> Array:
    """Vectorised HSV → RGB in [0, 1] (the piecewise-linear formula, one channel per offset)."""
    hue, saturation, value = (np.asarray(x, dtype=np.float32) for x in (hue, saturation, value))
    channels = []
    for offset in (5, 3, 1):
        k = (offset + hue * 6) % 6
        channels.append(value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.stack(channels, axis=-1)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> Array:
    """Low-frequency noise in [0, 1] of the given height and width: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells, cells), dtype=np.float32)
    upsampled = Image.fromarray(grid, mode="F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(upsampled), 0, 1)


def _two_tone(rng: np.random.Generator, colour: Array, pattern: Array) -> Array:
    """Blend a colour with a lighter or darker version of itself where ``pattern`` is 1."""
    strength = rng.uniform(0.5, 0.85)
    if colour.mean() > 0.5:
        other = colour * (1 - strength)
    else:
        other = colour + (1 - colour) * strength
    return colour + (other - colour) * pattern[..., None]


# --- patterns: local coordinates u, v (the object spans about [-1, 1]) → values in [0, 1] ------


def _dots(rng: np.random.Generator, u: Array, v: Array) -> Array:
    period = 2 / rng.uniform(3, 6)
    radius = period * rng.uniform(0.2, 0.35)
    du = (u + rng.uniform(0, period)) % period - period / 2
    dv = (v + rng.uniform(0, period)) % period - period / 2
    return (du * du + dv * dv <= radius * radius).astype(np.float32)


def _checker(rng: np.random.Generator, u: Array, v: Array) -> Array:
    period = 2 / rng.uniform(3, 6)
    cells = np.floor((u + rng.uniform(0, period)) / period) + np.floor((v + rng.uniform(0, period)) / period)
    return (cells % 2).astype(np.float32)


def _stripes(rng: np.random.Generator, u: Array, v: Array) -> Array:
    direction = rng.uniform(0, np.pi)
    frequency = rng.uniform(2, 4)
    wave = np.sin(np.pi * frequency * (u * np.cos(direction) + v * np.sin(direction)) + rng.uniform(0, 2 * np.pi))
    return (wave > 0).astype(np.float32)


def _hatch(rng: np.random.Generator, u: Array, v: Array) -> Array:
    period = 2 / rng.uniform(3, 6)
    width = period * rng.uniform(0.15, 0.3)
    lines_u = (u + rng.uniform(0, period)) % period < width
    lines_v = (v + rng.uniform(0, period)) % period < width
    return (lines_u | lines_v).astype(np.float32)


def _speckle(rng: np.random.Generator, u: Array, v: Array) -> Array:
    # Image-space noise: mottled patches plus per-pixel grain (texture need not follow the pose).
    mottle = _smooth_noise(rng, u.shape, int(rng.integers(4, 8)))
    grain = rng.random(u.shape, dtype=np.float32)
    return np.clip(1.6 * (0.6 * mottle + 0.4 * grain) - 0.3, 0, 1)


_GENERIC_PATTERNS = (_dots, _checker, _stripes, _hatch, _speckle)


# --- shapes: local coordinates → boolean mask ---------------------------------------------------


def _inside_polygon(u: Array, v: Array, vertices: list[tuple[float, float]]) -> Array:
    """Even-odd rule, vectorised over pixels (works for the non-convex star)."""
    inside = np.zeros(u.shape, dtype=bool)
    for (u1, v1), (u2, v2) in zip(vertices, vertices[1:] + vertices[:1]):
        if v1 == v2:
            continue  # a horizontal edge is never crossed by a horizontal ray
        crosses = (v1 > v) != (v2 > v)
        inside ^= crosses & (u < u1 + (u2 - u1) * (v - v1) / (v2 - v1))
    return inside


def _ellipse(rng: np.random.Generator, u: Array, v: Array) -> Array:
    aspect = rng.uniform(0.7, 1.0)
    return u * u + (v / aspect) ** 2 <= 1


def _rectangle(rng: np.random.Generator, u: Array, v: Array) -> Array:
    aspect = rng.uniform(0.35, 0.7)
    return (np.abs(u) <= 1) & (np.abs(v) <= aspect)


def _triangle(rng: np.random.Generator, u: Array, v: Array) -> Array:
    half_base = rng.uniform(0.7, 1.0)
    apex = rng.uniform(-0.3, 0.3)
    return _inside_polygon(u, v, [(apex, -1.0), (half_base, 1.0), (-half_base, 1.0)])


def _star(rng: np.random.Generator, u: Array, v: Array) -> Array:
    inner = rng.uniform(0.38, 0.5)
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return _inside_polygon(u, v, list(zip(radii * np.cos(angles), radii * np.sin(angles))))


def _annulus(rng: np.random.Generator, u: Array, v: Array) -> Array:
    aspect = rng.uniform(0.8, 1.0)
    inner = rng.uniform(0.45, 0.65)
    radius = np.sqrt(u * u + (v / aspect) ** 2)
    return (radius <= 1) & (radius >= inner)  # the hole shows the background


def _boat(rng: np.random.Generator, u: Array, v: Array) -> Array:
    keel = rng.uniform(0.5, 0.75)
    hull = _inside_polygon(u, v, [(-1.0, _BOAT_DECK), (1.0, _BOAT_DECK), (keel, 1.0), (-keel, 1.0)])
    mast = rng.uniform(-0.15, 0.1)
    main_boom, jib_foot = mast + rng.uniform(0.55, 0.85), mast - rng.uniform(0.35, 0.6)
    mainsail = _inside_polygon(u, v, [(mast + 0.05, -1.0), (main_boom, _BOAT_DECK), (mast + 0.05, _BOAT_DECK)])
    jib = _inside_polygon(u, v, [(mast - 0.05, -0.8), (mast - 0.05, _BOAT_DECK), (jib_foot, _BOAT_DECK)])
    return hull | mainsail | jib


# --- painting -----------------------------------------------------------------------------------


def _paint_pattern(pattern: Callable, rng: np.random.Generator, u: Array, v: Array, colour: Array) -> Array:
    return _two_tone(rng, colour, pattern(rng, u, v))


def _paint_boat(rng: np.random.Generator, u: Array, v: Array, colour: Array) -> Array:
    """Planked hull in the class colour under pale sails with faint seams."""
    plank_period = rng.uniform(0.1, 0.16)
    planks = ((v - _BOAT_DECK) % plank_period < 0.3 * plank_period).astype(np.float32)
    hull = colour * (1 - 0.45 * planks[..., None])
    sail_colour = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.15), rng.uniform(0.88, 1.0))
    seams = (np.abs(u * 7 + rng.uniform(0, 1)) % 1 < 0.12).astype(np.float32)
    sail = np.broadcast_to(sail_colour, hull.shape) * (1 - 0.15 * seams[..., None])
    return np.where((v < _BOAT_DECK)[..., None], sail, hull)


@dataclass(frozen=True)
class _ClassStyle:
    shape: Callable[[np.random.Generator, Array, Array], Array]
    paint: Callable[[np.random.Generator, Array, Array, Array], Array]
    hsv: tuple[float, float, float]  # centre of the colour family
    max_tilt: float  # radians either way from upright


_STYLES = {
    "ball": _ClassStyle(_ellipse, partial(_paint_pattern, _dots), (0.0, 0.8, 0.85), np.pi),
    "block": _ClassStyle(_rectangle, partial(_paint_pattern, _checker), (0.67, 0.7, 0.8), np.pi),
    "tent": _ClassStyle(_triangle, partial(_paint_pattern, _stripes), (0.14, 0.85, 0.9), np.pi / 6),
    "star": _ClassStyle(_star, partial(_paint_pattern, _speckle), (0.85, 0.7, 0.85), np.pi),
    "ring": _ClassStyle(_annulus, partial(_paint_pattern, _hatch), (0.33, 0.7, 0.7), np.pi),
    "boat": _ClassStyle(_boat, _paint_boat, (0.07, 0.65, 0.5), np.pi / 15),
}


def _instance_colour(rng: np.random.Generator, hsv: tuple[float, float, float]) -> Array:
    hue = rng.uniform(0, 1) if rng.random() < _OFF_COLOUR_RATE else hsv[0] + rng.uniform(-0.035, 0.035)
    saturation = np.clip(hsv[1] + rng.uniform(-0.12, 0.12), 0, 1)
    value = np.clip(hsv[2] + rng.uniform(-0.12, 0.12), 0, 1)
    return _hsv_to_rgb(hue, saturation, value)


def _shaded(rng: np.random.Generator, u: Array, v: Array, paint: Array) -> Array:
    """Light from a random side, so an object's colour is not one flat value."""
    direction = rng.uniform(0, 2 * np.pi)
    light = 1 + 0.15 * (u * np.cos(direction) + v * np.sin(direction))
    return np.clip(paint * light[..., None], 0, 1)


def _window(
    grid: tuple[Array, Array], centre: tuple[float, float], reach: float
) -> tuple[tuple[slice, slice], tuple[Array, Array]]:
    """The square of pixels within ``reach`` of ``centre``, clipped to the image, and its coordinates.

    Shapes and textures are computed on this window only, which keeps generation fast.
    """
    size = grid[0].shape[0]

    def span(middle: float) -> slice:
        return slice(int(np.clip(np.floor(middle - reach), 0, size)), int(np.clip(np.ceil(middle + reach), 0, size)))

    box = (span(centre[1]), span(centre[0]))
    return box, (grid[0][box], grid[1][box])


def _local_coords(
    grid: tuple[Array, Array], centre: tuple[float, float], half: float, angle: float, mirror: bool = False
) -> tuple[Array, Array]:
    """Pixel grid → object frame: origin at the centre, rotated by ``angle``, unit = ``half`` px."""
    dx, dy = grid[1] - centre[0], grid[0] - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / half
    v = (-dx * sin + dy * cos) / half
    return (-u if mirror else u), v


# --- background and context ---------------------------------------------------------------------


def _base_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth, muted colour field around one random hue: colours on a coarse grid, upsampled."""
    cells = (4, 4)
    hue = rng.uniform(0, 1) + rng.uniform(-0.08, 0.08, cells)
    coarse = _hsv_to_rgb(hue, rng.uniform(0.08, 0.43, cells), rng.uniform(0.4, 0.85, cells))
    return Image.fromarray((coarse * 255).astype(np.uint8), mode="RGB").resize((size, size), Image.Resampling.BICUBIC)


def _random_rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _draw_scribbles_and_blobs(rng: np.random.Generator, canvas: Image.Image) -> Array:
    """Thin polylines and small blobs in any colour, drawn on the background; returns floats in [0, 1]."""
    size = canvas.width
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(2, 7)):
        points = [tuple(xy) for xy in rng.uniform(-0.1, 1.1, (int(rng.integers(2, 6)), 2)) * size]
        draw.line(points, fill=_random_rgb(rng), width=int(rng.integers(1, max(2, size // 48) + 1)), joint="curve")
    for _ in range(rng.integers(2, 8)):
        x, y = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.015, 0.045, 2) * size
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=_random_rgb(rng))
    return np.asarray(canvas, dtype=np.float32) / 255


def _add_texture_patches(rng: np.random.Generator, image: Array, grid: tuple[Array, Array]) -> None:
    """Irregular grey-ish patches of the object textures: same low-level cues, but background."""
    size = image.shape[0]
    for _ in range(rng.integers(1, 4)):
        centre, half = tuple(rng.uniform(0, size, 2)), rng.uniform(0.04, 0.08) * size
        box, window = _window(grid, centre, 1.3 * half)  # the wobble reaches at most 1.3 half-widths
        u, v = _local_coords(window, centre, half, rng.uniform(0, 2 * np.pi))
        theta = np.arctan2(v, u)
        wobble = 1 + 0.2 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.1 * np.sin(5 * theta + rng.uniform(0, 6.3))
        inside = u * u + v * v <= wobble**2
        colour = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9))
        pattern = _GENERIC_PATTERNS[rng.integers(len(_GENERIC_PATTERNS))]
        image[box][inside] = _two_tone(rng, colour, pattern(rng, u, v))[inside]


def _draw_water(rng: np.random.Generator, image: Array, grid: tuple[Array, Array]) -> tuple[Array, Callable]:
    """A wavy blue band over the lower part of the image; returns its pixels and its surface line."""
    size = image.shape[0]
    level, amplitude = rng.uniform(0.5, 0.75) * size, rng.uniform(0.01, 0.03) * size
    wavelength, phase = rng.uniform(0.3, 0.7) * size, rng.uniform(0, 2 * np.pi)

    def surface(x):
        return level + amplitude * np.sin(2 * np.pi * x / wavelength + phase)

    ys, xs = grid
    region = ys >= surface(xs)
    colour = _hsv_to_rgb(rng.uniform(0.53, 0.6), rng.uniform(0.45, 0.7), rng.uniform(0.5, 0.8))
    streak_period = rng.uniform(0.04, 0.07) * size
    bend = 0.2 * np.sin(2 * np.pi * xs / (0.25 * size) + rng.uniform(0, 2 * np.pi))
    ripple = np.sin(2 * np.pi * (ys / streak_period + bend))
    depth = (ys - surface(xs)) / size
    water = colour * (0.85 + 0.25 * (ripple > 0.6)[..., None] - 0.4 * depth[..., None])
    image[region] = np.clip(water, 0, 1)[region]
    return region, surface


def _draw_rails(rng: np.random.Generator, image: Array) -> tuple[Array, tuple[float, float]]:
    """Two dark parallel rails on brown sleepers; returns their pixels and the track's (centre height, angle)."""
    size = image.shape[0]
    centre_y = rng.uniform(0.35, 0.85) * size
    angle = rng.uniform(-0.25, 0.25)
    gauge = rng.uniform(0.06, 0.1) * size
    along = np.array([np.cos(angle), np.sin(angle)])
    across = np.array([-np.sin(angle), np.cos(angle)])
    middle = np.array([size / 2, centre_y])
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    spacing = rng.uniform(0.05, 0.08) * size
    for t in np.arange(-0.75 * size, 0.75 * size, spacing) + rng.uniform(0, spacing):
        ends = [middle + t * along + side * 0.8 * gauge * across for side in (-1, 1)]
        draw.line([tuple(p) for p in ends], fill=2, width=max(1, round(size / 40)))
    for side in (-0.5, 0.5):
        ends = [middle + t * along + side * gauge * across for t in (-0.75 * size, 0.75 * size)]
        draw.line([tuple(p) for p in ends], fill=1, width=max(1, round(size / 64)))
    kinds = np.asarray(layer)
    image[kinds == 2] = _hsv_to_rgb(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.45))
    image[kinds == 1] = rng.uniform(0.1, 0.25)
    return kinds > 0, (centre_y, angle)


# --- one image ----------------------------------------------------------------------------------


@dataclass
class _Scene:
    image: Array  # H×W×3 float in [0, 1]
    mask: Array  # H×W uint8 class labels
    context: Array  # H×W uint8 context ids
    labels: tuple[str, ...]


def _place_object(
    rng: np.random.Generator, name: str, size: int, water: Callable | None, rails: tuple[float, float] | None
) -> tuple[tuple[float, float], float, float]:
    """Centre, half-extent and angle; boats float on the water line, blocks sit on the rails."""
    half = rng.uniform(*_SCALE_RANGE) * size / 2
    tilt = _STYLES[name].max_tilt
    angle = rng.uniform(-tilt, tilt)
    x, y = rng.uniform(0.15, 0.85, 2) * size
    if name == "boat" and water is not None:
        y = water(x) - rng.uniform(0.55, 0.9) * half  # the surface crosses the hull
    if name == "block" and rails is not None:
        track_y, track_angle = rails
        y = track_y + np.tan(track_angle) * (x - size / 2) - rng.uniform(0, 0.3) * half
        angle = track_angle + rng.normal(0, 0.05)
    return (x, y), half, angle


def _draw_contexts(
    rng: np.random.Generator, image: Array, grid: tuple[Array, Array], names: list[str]
) -> tuple[Array, Callable | None, tuple[float, float] | None]:
    """Draw each tied context, usually when its class is in the image and rarely otherwise.

    Returns the context-id map, the water surface line and the rail track, for placing objects.
    """
    context = np.zeros(image.shape[:2], dtype=np.uint8)
    water = rails = None
    for tied in CONTEXTS:
        rate = _CONTEXT_WITH_CLASS if tied.class_name in names else _CONTEXT_WITHOUT_CLASS
        if rng.random() >= rate:
            continue
        if tied.name == "water":
            region, water = _draw_water(rng, image, grid)
        else:
            region, rails = _draw_rails(rng, image)
        context[region] = tied.id
    return context, water, rails


def _draw_objects(
    rng: np.random.Generator,
    image: Array,
    grid: tuple[Array, Array],
    names: list[str],
    water: Callable | None,
    rails: tuple[float, float] | None,
) -> Array | None:
    """Paint the objects back to front and return the label mask, or None if none stays visible.

    An object left with fewer than ``min_visible_pixels`` visible pixels is not painted at all,
    so that the image labels and the mask always agree.
    """
    size = image.shape[0]
    instances = np.full((size, size), -1, dtype=np.int16)  # the topmost object at each pixel
    paints = []
    for index, name in enumerate(names):
        style = _STYLES[name]
        centre, half, angle = _place_object(rng, name, size, water, rails)
        box, window = _window(grid, centre, 1.42 * half)  # every shape lies within |u|, |v| <= 1
        u, v = _local_coords(window, centre, half, angle, mirror=bool(rng.integers(2)))
        inside = style.shape(rng, u, v)
        paints.append((box, _shaded(rng, u, v, style.paint(rng, u, v, _instance_colour(rng, style.hsv)))))
        instances[box][inside] = index

    # Dropping a barely visible object only uncovers the others, so one pass suffices.
    kept = [i for i in range(len(names)) if np.count_nonzero(instances == i) >= min_visible_pixels(size)]
    if not kept:
        return None
    mask = np.zeros((size, size), dtype=np.uint8)
    for index in kept:
        box, paint = paints[index]
        visible = instances[box] == index
        image[box][visible] = paint[visible]
        mask[box][visible] = CLASS_NAMES.index(names[index]) + 1
    return mask


def _render_scene(rng: np.random.Generator, size: int, grid: tuple[Array, Array]) -> _Scene:
    """One image; redrawn from scratch in the rare case that occlusion leaves no object visible."""
    while True:
        count = rng.choice(len(_OBJECT_COUNT_WEIGHTS), p=_OBJECT_COUNT_WEIGHTS) + 1
        names = [CLASS_NAMES[i] for i in rng.choice(len(CLASS_NAMES), count, replace=False)]
        image = _draw_scribbles_and_blobs(rng, _base_background(rng, size))
        _add_texture_patches(rng, image, grid)
        context, water, rails = _draw_contexts(rng, image, grid, names)
        mask = _draw_objects(rng, image, grid, names, water, rails)
        if mask is not None:
            break
    context[mask > 0] = 0  # objects occlude their context
    # Faint sensor noise, so that no region is perfectly flat.
    image = np.clip(image + 0.015 * rng.standard_normal(image.shape, dtype=np.float32), 0, 1)
    labels = tuple(name for index, name in enumerate(CLASS_NAMES, start=1) if (mask == index).any())
    return _Scene(image, mask, context, labels)


# --- the dataset --------------------------------------------------------------------------------


def _write_metadata(out: OutputFolder, seed: int, image_size: int, **statistics) -> None:
    metadata = {
        "contexts": [{"id": tied.id, "name": tied.name, "class": tied.class_name} for tied in CONTEXTS],
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "image_size": image_size,
        "min_visible_pixels": min_visible_pixels(image_size),
        **statistics,
    }
    out.write("context.json", Path.write_text, json.dumps(metadata, indent=2) + "\n")


def _write_split(
    out: OutputFolder, split: str, count: int, seed: int, image_size: int, grid: tuple[Array, Array]
) -> list[tuple[tuple[str, ...], set[str]]]:
    """Render and write one split; returns each image's labels and the contexts visible in it."""
    min_pixels = min_visible_pixels(image_size)
    rows, contents = ["image,labels"], []
    for index in range(count):
        scene = _render_scene(np.random.default_rng([seed, _SPLIT_IDS[split], index]), image_size, grid)
        name = f"{split}_{index:04d}"
        # Fast compression: the noisy RGB images would otherwise dominate the generation time.
        image = Image.fromarray((scene.image * 255 + 0.5).astype(np.uint8), mode="RGB")
        out.write(f"images/{name}.png", image.save, compress_level=1)
        out.write(f"masks/{name}.png", write_mask, scene.mask)
        out.write(f"context/{name}.png", Image.fromarray(scene.context, mode="L").save)
        rows.append(f"{name}.png,{';'.join(scene.labels)}")
        visible = {tied.name for tied in CONTEXTS if np.count_nonzero(scene.context == tied.id) >= min_pixels}
        contents.append((scene.labels, visible))
    out.write(f"{split}.csv", Path.write_text, "\n".join(rows) + "\n")
    return contents


def _co_occurrence(contents: list[tuple[tuple[str, ...], set[str]]], tied: TiedContext) -> tuple[float, float]:
    """P(context visible | its class in the image) and P(context visible | class absent)."""
    rates = []
    for with_class in (True, False):
        group = [tied.name in visible for labels, visible in contents if (tied.class_name in labels) == with_class]
        rates.append(float(np.mean(group)) if group else 0.0)
    return rates[0], rates[1]


def generate_synthetic_dataset(
    out: str | Path,
    seed: int = 0,
    num_train: int = 600,
    num_val: int = 150,
    image_size: int = 128,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write the synthetic dataset to ``out`` in the folder layout and return what it holds.

    ``out`` may be missing or empty; with ``overwrite`` it may also be a previous synthetic
    dataset, which is replaced (:class:`cosa.outputs.OutputFolder`). The same arguments always
    give byte-identical files.
    """
    if image_size < SYNTHETIC_MIN_SIZE:
        raise CosaError(f"image_size {image_size}: must be at least {SYNTHETIC_MIN_SIZE} pixels")
    if not 0 <= seed <= MAX_SEED:  # numpy's generators take no other seed
        raise CosaError(f"seed {seed}: must be in 0..{MAX_SEED}")
    if num_train < 1 or num_val < 0:
        raise CosaError(f"num_train {num_train}, num_val {num_val}: need at least one training image, and num_val >= 0")
    folder = OutputFolder(out, "--out", "cosa data synthetic", overwrite)
    folder.write("classes.txt", Path.write_text, "".join(f"{name}\n" for name in CLASS_NAMES))

    grid = tuple(axis.astype(np.float32) + 0.5 for axis in np.mgrid[0:image_size, 0:image_size])
    split_counts = {"train": num_train, "val": num_val}
    contents = []
    for split, count in split_counts.items():
        contents += _write_split(folder, split, count, seed, image_size, grid)

    class_counts = {name: sum(name in labels for labels, _ in contents) for name in CLASS_NAMES}
    rates = {tied.name: _co_occurrence(contents, tied) for tied in CONTEXTS}
    _write_metadata(
        folder,
        seed,
        image_size,
        split_counts=split_counts,
        class_image_counts=class_counts,
        context_rates={
            name: {"with_class": round(with_class, 4), "without_class": round(without_class, 4)}
            for name, (with_class, without_class) in rates.items()
        },
    )
    return SyntheticSummary(folder.path, CLASS_NAMES, split_counts, class_counts, rates)
