"""How a checkpoint's CAMs and segmentation score a class on its objects, its context and the rest.

    python benchmarks/context_values.py CHECKPOINT [--data DATA] [--split val] [--out JSON]

For a dataset with class contexts (``benchmarks/real_photos.py --context P``): for every image and
every class it shows, the values of the class's normalised CAM and of its segmentation probability
on the class's object pixels, on its context (background in the mask) and on the rest of the
image (other objects included), as quantiles; and where each class's CAM peaks. A threshold can tell object from
context only where these distributions part. One scale with its flip at the checkpoint's
``eval.size``, the assignment network.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import environment
from torch.utils.data import DataLoader

from cosa.data.datasets import EvaluationImages, collate_evaluation
from cosa.data.io import read_mask
from cosa.engine.inference import infer
from cosa.engine.trained import load_trained, split_for
from cosa.method.pseudo_labels import resize

REGIONS = ("object", "context", "rest")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@torch.no_grad()
def context_values(checkpoint: str, data: str | None, split_name: str) -> dict:
    model = load_trained(checkpoint, torch.device("cpu"))
    split = split_for(model, checkpoint, data, split_name)
    if not any(sample.context is not None for sample in split.samples):
        raise SystemExit(f"context_values: {split.root}: no class contexts (context.json) to measure")
    values = {kind: {region: [] for region in REGIONS} for kind in ("cam", "segmentation")}
    peaks = dict.fromkeys(REGIONS, 0)
    images = DataLoader(EvaluationImages(split, model.cfg.eval.size), batch_size=8, collate_fn=collate_evaluation)
    for batch in images:
        outputs = infer(model.network, batch["input"], [1.0], flip=True)
        for i, mask in enumerate(batch["mask"]):
            context = read_mask(split.samples[batch["index"][i]].context).long()
            cams = resize(outputs.cam[i : i + 1], tuple(mask.shape))[0]
            probabilities = resize(outputs.seg[i : i + 1], tuple(mask.shape))[0].softmax(dim=0)
            for c in batch["labels"][i].nonzero().flatten().tolist():
                own = (mask == c + 1, (context == c + 1) & (mask == 0))
                regions = dict(zip(REGIONS, (*own, ~(own[0] | own[1]))))
                for region, where in regions.items():
                    values["cam"][region].append(cams[c][where])
                    values["segmentation"][region].append(probabilities[c + 1][where])
                peak = cams[c].argmax()
                peaks.update({region: peaks[region] + int(where.flatten()[peak]) for region, where in regions.items()})
    quantiles = {
        kind: {
            region: dict(zip(map(str, QUANTILES), np.quantile(torch.cat(parts).numpy(), QUANTILES).round(3).tolist()))
            for region, parts in regions.items()
        }
        for kind, regions in values.items()
    }
    return {"checkpoint": checkpoint, "split": split.split, "quantiles": quantiles, "cam_peak_on": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", help="dataset root (default: the checkpoint's)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", help="JSON output")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = environment() | context_values(args.checkpoint, args.data, args.split)
    for kind, regions in result["quantiles"].items():
        for region, quantiles in regions.items():
            print(f"{kind:12s} {region:10s} " + " ".join(f"{value:.2f}" for value in quantiles.values()))
    print("CAM peak on", result["cam_peak_on"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
