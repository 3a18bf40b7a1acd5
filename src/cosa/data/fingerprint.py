"""What makes a training set the same one wherever it lies: its classes and its training split.

A run stores this with its checkpoints, so that ``--resume`` accepts the dataset at a new path
(a moved folder, another machine's mount, a relative path typed from elsewhere) and refuses
another dataset, or the same one with images or labels changed, which would make the rest of the
run another experiment. Paths and file contents are left out: they change with a move, or cost a
read of every image.
"""

from __future__ import annotations

import hashlib

from cosa.data.layouts import DatasetSplit


def fingerprint(split: DatasetSplit) -> dict:
    """The classes, and the training split's name, size and digest of its image names and labels."""
    digest = hashlib.sha256()
    for sample in split.samples:
        digest.update(f"{sample.name}\t{','.join(map(str, sample.labels))}\n".encode())
    return {
        "classes": list(split.class_names),
        "split": split.split,
        "images": len(split.samples),
        "digest": digest.hexdigest(),
    }


def differences(stored: dict, current: dict) -> str | None:
    """How ``current`` differs from ``stored``, in words; None when they are the same dataset."""
    if stored["classes"] != current["classes"]:
        return f"its classes are {', '.join(current['classes'])}, the run's were {', '.join(stored['classes'])}"
    if stored["split"] != current["split"]:
        return f"its training split is '{current['split']}', the run's was '{stored['split']}'"
    if stored["images"] != current["images"]:
        return f"split '{current['split']}' has {current['images']} images, the run's had {stored['images']}"
    if stored["digest"] != current["digest"]:
        return f"split '{current['split']}' lists other images or labels than the run's"
    return None
