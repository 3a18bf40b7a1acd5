"""L_reg: the dense energy (dense CRF) regulariser on the segmentation probabilities (METHOD.md §6).

With s = softmax(S) (B×K×H×W), the strong-view image I (0–255), the crop-box mask R and the CAM
pseudo-label P, everything is first downscaled by ``scale`` (nearest for I, R, P; bilinear for s).
At that resolution

    L_reg = −(λ/B) Σ_b Σ_k Σ_i R(i) s_k(i) · G(i) · Σ_j K(i,j) R(j) s_k(j)
    K(i,j) = exp(−‖p_i − p_j‖² / 2σ_xy² − ‖I_i − I_j‖² / 2σ_rgb²)

where p are pixel (row, col) coordinates, σ_xy = ``sigma_xy · scale`` and the sum over j runs over
every pixel of the image, j = i included. The gate G(i) = max(0, R(i) − max_k s_k(i)), set to 1
where P(i) = 255, restricts the energy to pixels the segmentation is unsure about or the CAM
pseudo-label ignores.

The pixels are embedded as f = [p/σ_xy, I/σ_rgb], so K(i,j) = exp(−½‖f_i − f_j‖²). The filter
Σ_j K(i,j) v(j) is evaluated in one of two ways (``method``):

- ``released``: the permutohedral lattice as the released code's compiled extension computes it
  (:mod:`cosa.method.permutohedral`, in plain PyTorch, O(HW)), with its features in the same
  order and origin, since the lattice's discretisation depends on both. Its response is a
  Gaussian of the right width with cut tails: its sums are about 0.6 of the exact ones, and the
  released λ was chosen for them.
- ``gaussian``: the exact sums, evaluated pair by pair, tile by tile, up to ``EXACT_MAX_PIXELS``
  pixels (O((HW)²), halved by K's symmetry), and above that by the lattice rescaled per image to
  the exact filter on a sample of pixels. L_reg is then the formula above, at about 1.6× the
  released size.

The gradient is the released one, not the exact derivative of L_reg: with
AS_k(i) = G(i) · Σ_j K(i,j) R(j) s_k(j), it is ∂L/∂s_k(i) = −2λ · AS_k(i) · R(i) / B. The gate is held
constant, and the second of the two symmetric terms is taken as AS_k(i) too, where the exact
derivative would have Σ_j K(i,j) G(j) R(j) s_k(j). Matching the released code keeps training
behaviour comparable to the published results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cosa.data.io import IGNORE_INDEX
from cosa.method.permutohedral import permutohedral_filter

# Side of the square tiles of K evaluated at once. On a CPU a 512×512 fp32 tile (1 MiB) stays in
# cache across the tile's few passes (2–3× faster than long row strips, measured); on an
# accelerator a 4096×4096 tile (64 MiB) keeps the number of kernel launches small.
CPU_TILE = 512
ACCELERATOR_TILE = 4096
# Above this many pixels (at the loss's resolution) the Gaussian filter uses the calibrated
# lattice. Up to 64² (a crop of 128) the exact filter costs at most ~0.1 s per image on a CPU;
# at 112² (crop 224) it already took 28% of a ViT-Ti step (docs/benchmarks.md).
EXACT_MAX_PIXELS = 64 * 64
# Pixels on which the exact filter calibrates the lattice's scale (docs/method.md).
CALIBRATION_SAMPLES = 256
# exp(−87) ≈ 1.6e-38 is the smallest kernel value kept: still a normal fp32 number.
EXPONENT_FLOOR = -87.0


def bilateral_features(image: Tensor, sigma_rgb: float, sigma_xy: float) -> Tensor:
    """Embed a 3×H×W image as (H·W)×5 features [col/σ_xy, row/σ_xy, RGB/σ_rgb], the released order."""
    _, height, width = image.shape
    rows = torch.arange(height, device=image.device, dtype=image.dtype)
    cols = torch.arange(width, device=image.device, dtype=image.dtype)
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy")) / sigma_xy
    return torch.cat([grid, image / sigma_rgb]).flatten(1).T


def _exponent_factors(features: Tensor) -> tuple[Tensor, Tensor]:
    """N×(D+2) ``rows`` and (D+2)×N ``cols`` with rows[i] · cols[:, j] = −½‖f_i − f_j‖².

    −½‖a − b‖² = a·b − ½|a|² − ½|b|²: with the norm terms appended to the features, one matrix
    product gives the kernel's exponent, without separate broadcast passes over a tile. Centring
    the features first does not change the distances but shrinks the norms that the expansion
    subtracts, reducing cancellation.
    """
    features = features - features.mean(dim=0)
    half_sq_norm = 0.5 * features.square().sum(dim=1, keepdim=True)
    ones = torch.ones_like(half_sq_norm)
    rows = torch.cat([features, -half_sq_norm, ones], dim=1)
    cols = torch.cat([features, ones, -half_sq_norm], dim=1).T.contiguous()
    return rows, cols


def _kernel_tile(rows: Tensor, cols: Tensor) -> Tensor:
    tile = rows @ cols
    # The exponent is ≤ 0 exactly: the upper clamp removes rounding that would push K(i, i)
    # above 1. The lower one keeps exp out of the subnormal range, where it is an order of
    # magnitude slower on CPUs; it changes K only where K < 2e-38.
    return tile.clamp_(min=EXPONENT_FLOOR, max=0).exp_()


def bilateral_filter(features: Tensor, values: Tensor, chunk_size: int | None = None) -> Tensor:
    """Exact Gaussian filter out(i) = Σ_j exp(−½‖f_i − f_j‖²) · values(j), over all pairs i, j.

    ``features`` is N×D and ``values`` N×C. K is evaluated in ``chunk_size``×``chunk_size`` tiles
    (default ``CPU_TILE`` on a CPU, ``ACCELERATOR_TILE`` elsewhere), so memory stays bounded.
    """
    num_pixels = features.shape[0]
    if chunk_size is None:
        chunk_size = CPU_TILE if features.device.type == "cpu" else ACCELERATOR_TILE
    rows, cols = _exponent_factors(features)
    out = torch.zeros_like(values)
    for i in range(0, num_pixels, chunk_size):
        block_i = slice(i, i + chunk_size)
        # K is symmetric, so only tiles on or above the diagonal are evaluated: an off-diagonal
        # tile K[I, J] filters both rows I (with values J) and, transposed, rows J (with values I).
        for j in range(i, num_pixels, chunk_size):
            block_j = slice(j, j + chunk_size)
            tile = _kernel_tile(rows[block_i], cols[:, block_j])
            out[block_i].addmm_(tile, values[block_j])
            if j != i:
                out[block_j].addmm_(tile.T, values[block_i])
    return out


def calibrated_lattice_filter(features: Tensor, values: Tensor, samples: int = CALIBRATION_SAMPLES) -> Tensor:
    """The permutohedral lattice's filter, rescaled to the exact filter's total over ``samples`` rows.

    The rows are evenly spaced (every image region is represented, and no random state is used);
    the exact filter on them costs ``samples``·N kernel values.
    """
    approximate = permutohedral_filter(features, values)
    sample = torch.linspace(0, len(features) - 1, min(samples, len(features)), device=features.device).long()
    rows, cols = _exponent_factors(features)
    exact = _kernel_tile(rows[sample], cols) @ values
    return approximate * (exact.sum() / approximate[sample].sum().clamp_min(torch.finfo(values.dtype).tiny))


def gaussian_filter(features: Tensor, values: Tensor, chunk_size: int | None = None) -> Tensor:
    """Σ_j exp(−½‖f_i − f_j‖²) · values(j): exact up to ``EXACT_MAX_PIXELS`` rows, the calibrated lattice above."""
    if features.shape[0] > EXACT_MAX_PIXELS:
        return calibrated_lattice_filter(features, values)
    return bilateral_filter(features, values, chunk_size)


def dense_filter(image: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float, method: str = "released",
                 chunk_size: int | None = None) -> Tensor:
    """Σ_j K(i,j) · values(j) over a 3×H×W ``image`` for C×H×W ``values``, by ``method``
    (``released`` or ``gaussian``, module docstring); C×H×W."""
    features = bilateral_features(image, sigma_rgb, sigma_xy)
    flat = values.flatten(1).T
    if method == "released":
        filtered = permutohedral_filter(features, flat)
    elif method == "gaussian":
        filtered = gaussian_filter(features, flat, chunk_size)
    else:
        raise ValueError(f"unknown dense filter {method!r}")
    return filtered.T.reshape(values.shape)


def _downscale(tensor: Tensor, scale: float, mode: str) -> Tensor:
    if mode == "bilinear":
        return F.interpolate(tensor, scale_factor=scale, mode=mode, align_corners=False, recompute_scale_factor=True)
    return F.interpolate(tensor, scale_factor=scale, mode=mode, recompute_scale_factor=True)


class _DenseEnergy(torch.autograd.Function):
    """−(1/B) Σ R·s·AS with AS = G · K(R·s); backward gives the released gradient −2·AS·R/B.

    The weight λ is applied by the caller, as in the released code.
    """

    @staticmethod
    def forward(
        ctx,
        probs: Tensor,
        image: Tensor,
        roi: Tensor,
        unlabeled: Tensor,
        sigma_rgb: float,
        sigma_xy: float,
        method: str,
        chunk_size: int | None,
    ) -> Tensor:
        batch = probs.shape[0]
        gate = roi - probs.amax(dim=1)
        gate[unlabeled] = 1
        gate.clamp_(min=0)
        masked = probs * roi.unsqueeze(1)
        filtered = torch.empty_like(probs)
        for b in range(batch):
            filtered[b] = dense_filter(image[b], masked[b], sigma_rgb, sigma_xy, method, chunk_size)
        weighted = filtered * gate.unsqueeze(1)  # AS
        ctx.save_for_backward(weighted, roi)
        ctx.batch = batch
        return -(masked * weighted).sum() / batch

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        weighted, roi = ctx.saved_tensors
        grad_probs = -2 * grad_output * weighted * roi.unsqueeze(1) / ctx.batch
        return grad_probs, None, None, None, None, None, None, None


def dense_energy_loss(
    image: Tensor,
    probs: Tensor,
    roi: Tensor,
    pseudo_label: Tensor,
    *,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    scale: float = 0.5,
    weight: float = 1e-7,
    method: str = "released",
    chunk_size: int | None = None,
) -> Tensor:
    """L_reg for a batch; 0-dim tensor on the inputs' device.

    Args:
        image: B×3×H×W strong-view image with values 0–255.
        probs: B×K×H×W segmentation probabilities (softmax over K); the only input given a gradient.
        roi: B×H×W crop-box mask, 1 on real pixels and 0 on padding.
        pseudo_label: B×H×W CAM pseudo-label; ``IGNORE_INDEX`` (255) opens the gate.
        sigma_rgb: colour bandwidth, in 0–255 units.
        sigma_xy: spatial bandwidth in pixels at the input resolution (scaled with ``scale``).
        scale: downscaling factor applied to everything before the energy is evaluated.
        weight: λ, the energy's weight.
        method: the filter, ``released`` (the released lattice) or ``gaussian`` (module docstring).
        chunk_size: side of the square tiles of the kernel evaluated at once (default: 512 on a
            CPU, 4096 on an accelerator; a tile takes chunk_size² · 4 bytes in fp32).
    """
    # The kernel's sums over tens of thousands of pixels need at least fp32, whatever autocast says.
    dtype = torch.promote_types(probs.dtype, torch.float32)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        small_probs = _downscale(probs.to(dtype), scale, "bilinear")
        small_image = _downscale(image.to(dtype), scale, "nearest")
        small_roi = _downscale(roi.unsqueeze(1).to(dtype), scale, "nearest").squeeze(1)
        small_label = _downscale(pseudo_label.unsqueeze(1).to(dtype), scale, "nearest").squeeze(1)
        unlabeled = small_label == IGNORE_INDEX
        energy = _DenseEnergy.apply(
            small_probs, small_image, small_roi, unlabeled, sigma_rgb, sigma_xy * scale, method, chunk_size
        )
    return weight * energy
