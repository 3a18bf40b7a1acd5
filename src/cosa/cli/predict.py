"""``cosa predict`` — masks, overlays, CAM pictures (and logits, VOC server files) for new images."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from contextlib import ExitStack, nullcontext
from pathlib import Path

from cosa.cli import add_amp_option, at_least, at_least_one, positive_number
from cosa.config.schema import MIN_EVAL_SIZE, Config
from cosa.data import IMAGE_SUFFIXES
from cosa.engine import NETWORKS
from cosa.errors import CosaError
from cosa.outputs import OutputFolder

COMMAND = "cosa predict"

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        help="predict masks for images",
        description="Writes OUT/NAME.png (VOC-palette mask), OUT/NAME_overlay.jpg (mask colours over the image) "
        "and OUT/NAME_cam.jpg (CAMs of the present classes: the --tags, else the predicted ones). "
        "Defaults follow the checkpoint's evaluation protocol: eval.size, "
        "eval.scales, eval.flip, eval.amp; no label information unless --tags is given. The protocol is "
        "printed with the count of masks.",
    )
    parser.add_argument("--checkpoint", required=True, help="a cosa checkpoint")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    parser.add_argument("--out", required=True, help="output folder, apart from the inputs; empty or new")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier predict in --out and --voc-submission (only those)",
    )
    parser.add_argument("--network", choices=NETWORKS, default="assignment")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=at_least_one, default=4)
    parser.add_argument(
        "--size", type=at_least(MIN_EVAL_SIZE), metavar="N", help="network input size N×N (default: eval.size, 448)"
    )
    parser.add_argument(
        "--scales",
        type=positive_number,
        nargs="+",
        metavar="S",
        help="input scales whose logits are summed (default: eval.scales, 1.0 0.5 1.5 0.75 1.25)",
    )
    parser.add_argument("--no-flip", action="store_true", help="do not add the flipped images (default: eval.flip)")
    add_amp_option(parser)
    parser.add_argument(
        "--tags",
        metavar="FILE",
        help="CSV image,labels (labels ';'-separated class names), one row per input: logits of "
        "classes absent from an image's tags are masked before the argmax (tag-masked)",
    )
    parser.add_argument(
        "--crf",
        action="store_true",
        help="dense CRF on the softmax of the logits, with the checkpoint's eval.crf_params "
        "(needs: pip install 'cosa[crf]')",
    )
    parser.add_argument(
        "--crf-workers",
        type=at_least(0),
        metavar="N",
        help="processes that run the CRF (default: min(4, CPU cores); 0 or 1: this process); "
        "the masks do not depend on it",
    )
    parser.add_argument(
        "--save-logits",
        action="store_true",
        help="also write OUT/NAME.npz: seg ((C+1)×H×W summed segmentation logits, before any "
        "tag masking) and cam (C×H×W normalised CAMs), float32 at the image size",
    )
    parser.add_argument(
        "--voc-submission",
        metavar="DIR",
        help="also write DIR/results/VOC2012/Segmentation/comp6_test_cls/NAME.png for the PASCAL "
        "VOC evaluation server (upload a tar of DIR/results). comp6, not comp5: comp5 is for "
        "methods trained on VOC 2012 data only, and CoSA uses an ImageNet-pre-trained backbone "
        "and SBD's extra images (train_aug). Needs a model of the 20 VOC classes",
    )
    parser.set_defaults(run=run)


def collect_images(inputs: list[str]) -> list[Path]:
    """The images named, and those directly in the folders named; what else a folder holds is told in one line."""
    images: list[Path] = []
    skipped: dict[tuple[str, str], list[str]] = {}  # why, as (singular, plural) → names
    for item in map(Path, inputs):
        if item.is_dir():
            for entry in sorted(item.iterdir()):
                why = _why_skipped(entry)
                if why is None:
                    images.append(entry)
                else:
                    skipped.setdefault(why, []).append(entry.name)
        elif item.is_file():
            images.append(item)
        else:
            raise CosaError(f"{item}: no such image or folder")
    if not images:
        raise CosaError(f"no images found in {', '.join(inputs)}" + (f"; {_told(skipped)}" if skipped else ""))
    if skipped:
        log.warning("%s", _told(skipped))
    stems = [path.stem for path in images]
    duplicate = next((stem for stem in stems if stems.count(stem) > 1), None)
    if duplicate:
        raise CosaError(f"two inputs are named '{duplicate}'; outputs would overwrite each other")
    return images


def _why_skipped(entry: Path) -> tuple[str, str] | None:
    """Why a folder's entry is not predicted, as a noun (singular, plural); None for an image."""
    suffix = entry.suffix.lower()
    if entry.is_dir():
        return "subfolder", "subfolders"
    if entry.name.startswith("._"):  # macOS's AppleDouble companions carry their image's suffix
        return "macOS metadata file", "macOS metadata files"
    if entry.name.startswith("."):
        return "hidden file", "hidden files"
    if not suffix:
        return "file without a suffix", "files without a suffix"
    if suffix not in IMAGE_SUFFIXES:
        return f"{suffix} file", f"{suffix} files"
    return None


def _told(skipped: dict[tuple[str, str], list[str]]) -> str:
    """One line: what was skipped, counted by kind, with the first few names of each."""
    kinds = [
        f"{len(names)} {noun if len(names) == 1 else nouns} ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})"
        for (noun, nouns), names in skipped.items()
    ]
    return (
        f"skipped in the input folders: {'; '.join(kinds)}. "
        f"cosa predict reads {', '.join(IMAGE_SUFFIXES)} files and does not search subfolders"
    )


def protocol(cfg: Config, args: argparse.Namespace) -> Config:
    """The checkpoint's config with the --size, --scales, --no-flip and --amp of the command line."""
    size = cfg.eval.size if args.size is None else args.size
    scales = cfg.eval.scales if args.scales is None else args.scales
    if not set(scales) & set(cfg.method.assignment_scales):
        raise CosaError(
            f"--scales must include one of the CAM scales {cfg.method.assignment_scales} (method.assignment_scales)"
        )
    return dataclasses.replace(
        cfg,
        eval=dataclasses.replace(
            cfg.eval,
            size=size,
            scales=list(scales),
            flip=cfg.eval.flip and not args.no_flip,
            amp=args.amp or cfg.eval.amp,
        ),
    )


def output_folders(args: argparse.Namespace, held: ExitStack) -> tuple[OutputFolder, OutputFolder | None]:
    """--out and --voc-submission, checked against the inputs (and each other) before any work, held
    (locked) until ``held`` closes."""
    inputs = [("the input folder" if Path(item).is_dir() else "the input image", item) for item in args.inputs]
    inputs += [("the checkpoint", args.checkpoint)] + ([("the tags file", args.tags)] if args.tags else [])
    out = held.enter_context(OutputFolder(args.out, "--out", COMMAND, args.overwrite, inputs))
    if args.voc_submission is None:
        return out, None
    return out, held.enter_context(
        OutputFolder(args.voc_submission, "--voc-submission", COMMAND, args.overwrite, [*inputs, ("--out", args.out)])
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cosa.engine.crf import CrfPool
    from cosa.engine.distributed import resolve_device
    from cosa.engine.inference import inference_protocol, protocol_text
    from cosa.engine.predict import VOC_SUBMISSION_DIR, check_voc_classes, predict_images, read_tags
    from cosa.engine.runlog import setup_logging
    from cosa.engine.trained import load_trained
    from cosa.reporting.predictions import PredictionWriter

    setup_logging()
    with ExitStack() as held:
        out, voc_submission = output_folders(args, held)
        images = collect_images(args.inputs)  # a missing or empty input is told before the model is loaded
        device = resolve_device(args.device)
        model = load_trained(args.checkpoint, device, args.network)
        if args.voc_submission:
            check_voc_classes(model.class_names, args.checkpoint)
        cfg = protocol(model.cfg, args)
        tags = read_tags(args.tags, model.class_names, [path.stem for path in images]) if args.tags else None
        writer = PredictionWriter(out, args.save_logits, voc_submission)
        with CrfPool(cfg.eval.crf_params, args.crf_workers) if args.crf else nullcontext() as crf_pool:
            predictions = predict_images(
                model.network, model.class_names, images, cfg, device, tags, crf_pool, args.batch_size
            )
            for prediction in tqdm(predictions, total=len(images), desc="predict", unit="image"):
                writer.write(prediction)
    used = {**inference_protocol(cfg, args.network), "tag_masked": tags is not None, "crf": args.crf}
    print(
        f"wrote {len(images)} mask{'' if len(images) == 1 else 's'} to {out.path} ({protocol_text(used)})"
        + (f"; VOC server files under {voc_submission.path / VOC_SUBMISSION_DIR}" if voc_submission else "")
    )
    return 0
