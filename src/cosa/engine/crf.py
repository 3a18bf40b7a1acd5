"""Optional dense CRF post-processing, from the ``crf`` extra (pydensecrf2).

The compiled package is imported only when a CRF is asked for, so training and plain
evaluation never need it.

A CRF costs about as much CPU time per image as the network does GPU time, so :class:`CrfPool`
spreads images over worker processes. The workers are *spawned*: forking a process that holds a
CUDA context and thread pools is unsafe. Each image goes through the same pure function
(:func:`crf_labels`) whether it runs in a worker or in this process, so the labels are identical
for any number of workers. Workers need only numpy and pydensecrf; this module imports torch for
type hints only, so a worker starts in a fraction of a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from multiprocessing import get_context
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING

import numpy as np

from cosa.config.schema import CrfConfig
from cosa.errors import CosaError

if TYPE_CHECKING:
    import torch

CRF_EXTRA = "pip install 'cosa[crf]'"


def require_pydensecrf() -> ModuleType:
    """``pydensecrf.densecrf``, or a one-line error naming the extra that provides it."""
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise CosaError(f"--crf needs the optional CRF package: {CRF_EXTRA} (pydensecrf2)") from None
    return densecrf


def default_workers() -> int:
    """CRF worker processes when none are asked for: the cores, at most 4."""
    return min(4, os.cpu_count() or 1)


def crf_probabilities(image: np.ndarray, probabilities: np.ndarray, params: CrfConfig) -> np.ndarray:
    """Refined probabilities (K×H×W float32) from an image (H×W×3 uint8) and probabilities (K×H×W)."""
    densecrf = require_pydensecrf()
    labels, height, width = probabilities.shape
    crf = densecrf.DenseCRF2D(width, height, labels)
    unary = -np.log(np.clip(probabilities, 1e-8, 1.0)).reshape(labels, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=np.ascontiguousarray(image, dtype=np.uint8),
        compat=params.bilateral_compat,
    )
    return np.array(crf.inference(params.iterations), dtype=np.float32).reshape(labels, height, width)


def crf_labels(image: np.ndarray, probabilities: np.ndarray, params: CrfConfig) -> np.ndarray:
    """Argmax (H×W int64) of :func:`crf_probabilities`; only labels travel back from a worker."""
    return crf_probabilities(image, probabilities, params).argmax(axis=0)


class CrfPool:
    """Dense CRF label maps for many images, in ``workers`` spawned processes (0 or 1: in this one).

    Use it as a context manager (or call :meth:`close`) so that the workers end with the work.
    """

    def __init__(self, params: CrfConfig, workers: int | None = None) -> None:
        require_pydensecrf()  # fail before any image is processed, not in a worker
        workers = default_workers() if workers is None else workers
        if workers < 0:
            raise CosaError(f"--crf-workers must be 0 or more, got {workers}")
        self.params = params
        self._executor = (
            ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if workers > 1 else None
        )

    def labels(self, jobs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[np.ndarray]:
        """CRF labels of softmax(logits) for each (image 3×H×W uint8, logits K×H×W) pair, in order."""
        images, probabilities = [], []
        for image, logits in jobs:
            images.append(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy(), dtype=np.uint8))
            probabilities.append(logits.float().softmax(dim=0).cpu().numpy())
        if self._executor is None:
            return [crf_labels(image, p, self.params) for image, p in zip(images, probabilities)]
        return list(self._executor.map(crf_labels, images, probabilities, repeat(self.params)))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> CrfPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
