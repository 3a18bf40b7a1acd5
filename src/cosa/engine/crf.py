"""Optional dense CRF post-processing (METHOD.md §9), from the ``crf`` extra (pydensecrf2).

The compiled package is imported only when a CRF is asked for, so training and plain
evaluation never need it.
"""

from __future__ import annotations

import numpy as np
import torch

from cosa.config.schema import CrfConfig
from cosa.errors import CosaError


class DenseCRF:
    def __init__(self, params: CrfConfig) -> None:
        try:
            import pydensecrf.densecrf as densecrf
        except ImportError:
            raise CosaError("--crf needs the optional CRF package: pip install 'cosa[crf]' (pydensecrf2)") from None
        self._densecrf = densecrf
        self.params = params

    def __call__(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Refined probabilities (K×H×W) from an image (3×H×W uint8) and segmentation logits (K×H×W)."""
        probabilities = logits.float().softmax(dim=0).cpu().numpy()
        labels, height, width = probabilities.shape
        crf = self._densecrf.DenseCRF2D(width, height, labels)
        unary = -np.log(np.clip(probabilities, 1e-8, 1.0)).reshape(labels, -1)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        p = self.params
        crf.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
        rgb = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        crf.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=rgb, compat=p.bilateral_compat)
        refined = np.array(crf.inference(p.iterations), dtype=np.float32).reshape(labels, height, width)
        return torch.from_numpy(refined)
