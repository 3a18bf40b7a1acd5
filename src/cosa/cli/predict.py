"""``cosa predict`` — masks and CAM pictures for new images."""

from __future__ import annotations

import argparse
from pathlib import Path

from cosa.cli import NETWORKS
from cosa.data import IMAGE_SUFFIXES
from cosa.errors import CosaError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="predict masks for images",
        description="Writes OUT/NAME.png (palette mask, no label information used) and OUT/NAME_cam.jpg "
                    "(CAMs of the predicted classes over the image).",
    )
    parser.add_argument("--checkpoint", required=True, help="a cosa checkpoint")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--network", choices=NETWORKS, default="assignment")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.set_defaults(run=run)


def collect_images(inputs: list[str]) -> list[Path]:
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.is_file():
            images.append(item)
        else:
            raise CosaError(f"{item}: no such image or folder")
    if not images:
        raise CosaError(f"no images found in {', '.join(inputs)}")
    stems = [path.stem for path in images]
    duplicate = next((stem for stem in stems if stems.count(stem) > 1), None)
    if duplicate:
        raise CosaError(f"two inputs are named '{duplicate}'; outputs would overwrite each other")
    return images


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from cosa.cli.common import load_trained, setup_logging
    from cosa.data.datasets import EvaluationImages, collate_evaluation
    from cosa.data.io import write_mask
    from cosa.data.layouts import DatasetSplit, Sample
    from cosa.engine.distributed import resolve_device
    from cosa.engine.inference import infer, predicted_tags, segmentation_labels
    from cosa.method.pseudo_labels import resize
    from cosa.viz import blend, heatmap, save_picture, to_numpy_image

    setup_logging()
    device = resolve_device(args.device)
    model = load_trained(args.checkpoint, device, args.network)
    images = collect_images(args.inputs)
    split = DatasetSplit(Path("."), "files", "predict", model.class_names,
                         [Sample(path.stem, path, ()) for path in images])
    loader = DataLoader(EvaluationImages(split, model.cfg.eval.size, with_masks=False), batch_size=args.batch_size,
                        collate_fn=collate_evaluation, num_workers=2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for batch in tqdm(loader, desc="predict", unit="batch"):
            outputs = infer(model.network, batch["input"].to(device), model.cfg.eval.scales, model.cfg.eval.flip,
                            model.cfg.method.assignment_scales)
            tags = predicted_tags(outputs.logits)
            for i, (name, image) in enumerate(zip(batch["name"], batch["image"])):
                size = tuple(image.shape[-2:])
                write_mask(out / f"{name}.png", segmentation_labels(resize(outputs.seg[i : i + 1], size))[0])
                cams = resize(outputs.cam[i : i + 1], size)[0] * tags[i][:, None, None]
                save_picture(out / f"{name}_cam.jpg", blend(to_numpy_image(image), heatmap(cams.amax(0))))
    print(f"wrote {len(images)} masks to {out}")
    return 0
