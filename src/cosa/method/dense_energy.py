"""L_reg: the dense energy (dense CRF) regulariser on the segmentation probabilities.

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
Σ_j K(i,j) v(j) is the permutohedral lattice as the released code's compiled extension computes
it (:mod:`cosa.method.permutohedral`, in plain PyTorch, O(HW)), with its features in the same
order and origin, since the lattice's discretisation depends on both. Its response is a Gaussian
of the right width with cut tails: its sums are about 0.6 of the exact ones, and the released λ
was chosen for them.

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


def bilateral_features(image: Tensor, sigma_rgb: float, sigma_xy: float) -> Tensor:
    """Embed a 3×H×W image (or a batch, B×3×H×W) as (H·W)×5 features [col/σ_xy, row/σ_xy, RGB/σ_rgb],
    the released order (B×(H·W)×5)."""
    height, width = image.shape[-2:]
    rows = torch.arange(height, device=image.device, dtype=image.dtype)
    cols = torch.arange(width, device=image.device, dtype=image.dtype)
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy")) / sigma_xy
    grid = grid.expand(*image.shape[:-3], 2, height, width)
    return torch.cat([grid, image / sigma_rgb], dim=-3).flatten(-2).transpose(-1, -2)


def dense_filter(image: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float) -> Tensor:
    """Σ_j K(i,j) · values(j) over a 3×H×W ``image`` for C×H×W ``values`` (or batches of both, each
    image its own lattice), by the released lattice; shaped like ``values``."""
    features = bilateral_features(image, sigma_rgb, sigma_xy)
    points = values.flatten(-2).transpose(-1, -2)
    return permutohedral_filter(features, points).transpose(-1, -2).reshape(values.shape)


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
    ) -> Tensor:
        batch = probs.shape[0]
        gate = (roi - probs.amax(dim=1)).masked_fill(unlabeled, 1).clamp(min=0)
        masked = probs * roi.unsqueeze(1)
        filtered = dense_filter(image, masked, sigma_rgb, sigma_xy)
        weighted = filtered * gate.unsqueeze(1)  # AS
        ctx.save_for_backward(weighted, roi)
        ctx.batch = batch
        return -(masked * weighted).sum() / batch

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        weighted, roi = ctx.saved_tensors
        grad_probs = -2 * grad_output * weighted * roi.unsqueeze(1) / ctx.batch
        return grad_probs, None, None, None, None, None


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
    """
    # The kernel's sums over tens of thousands of pixels need at least fp32, whatever autocast says.
    dtype = torch.promote_types(probs.dtype, torch.float32)
    with torch.autocast(device_type=probs.device.type, enabled=False):
        small_probs = _downscale(probs.to(dtype), scale, "bilinear")
        small_image = _downscale(image.to(dtype), scale, "nearest")
        small_roi = _downscale(roi.unsqueeze(1).to(dtype), scale, "nearest").squeeze(1)
        small_label = _downscale(pseudo_label.unsqueeze(1).to(dtype), scale, "nearest").squeeze(1)
        unlabeled = small_label == IGNORE_INDEX
        energy = _DenseEnergy.apply(small_probs, small_image, small_roi, unlabeled, sigma_rgb, sigma_xy * scale)
    return weight * energy
