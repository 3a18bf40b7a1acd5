"""L_reg (dense energy) against brute-force sums over all pixel pairs.

L_reg filters with the released permutohedral lattice, which the released code's own outputs
check in ``tests/test_release_fidelity.py``. Here the loss around the filter (downscaling, gate,
the released gradient) is checked exactly by putting the exact Gaussian filter in the lattice's
place (``exact_energy``), and the lattice against that exact filter.
"""

import functools

import pytest
import torch
import torch.nn.functional as F

import cosa.method.dense_energy as dense_energy
from cosa.data.io import IGNORE_INDEX
from cosa.method.dense_energy import bilateral_features, dense_energy_loss
from cosa.method.permutohedral import permutohedral_filter


def exact_filter(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The brute-force reference: out(i) = Σ_j exp(−½‖f_i − f_j‖²) · values(j) over all pairs."""
    return torch.exp(-0.5 * torch.cdist(features, features).square()) @ values


@pytest.fixture
def exact_energy(monkeypatch):
    """dense_energy_loss with the exact filter in the lattice's place."""
    monkeypatch.setattr(dense_energy, "permutohedral_filter", exact_filter)
    return dense_energy_loss


def pair_kernel(image: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    """K(i, j) for one 3×H×W image, written directly from the definition (no feature embedding)."""
    _, height, width = image.shape
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([rows, cols]).flatten(1).T.to(image.dtype)
    colours = image.flatten(1).T
    spatial = (coords[:, None] - coords[None]).square().sum(-1) / (2 * sigma_xy**2)
    colour = (colours[:, None] - colours[None]).square().sum(-1) / (2 * sigma_rgb**2)
    return torch.exp(-spatial - colour)


def naive_terms(image, probs, roi, pseudo_label, sigma_rgb, sigma_xy, scale):
    """Downscale as specified, then return (loss without λ, AS, downscaled R) from dense sums."""

    def nearest(tensor):
        return F.interpolate(tensor, scale_factor=scale, mode="nearest", recompute_scale_factor=True)

    probs = F.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=True)
    image = nearest(image)
    roi = nearest(roi[:, None])[:, 0]
    unlabeled = nearest(pseudo_label[:, None].double())[:, 0] == IGNORE_INDEX
    batch, classes, height, width = probs.shape
    gate = torch.where(unlabeled, 1.0, roi - probs.amax(dim=1)).clamp(min=0)
    masked = (probs * roi[:, None]).flatten(2)
    as_ = torch.empty_like(masked)
    for b in range(batch):
        kernel = pair_kernel(image[b], sigma_rgb, sigma_xy * scale)
        as_[b] = (masked[b] @ kernel.T) * gate[b].flatten()
    loss = -(masked * as_).sum() / batch
    return loss, as_.view(batch, classes, height, width), roi


def random_inputs(batch=2, classes=3, height=8, width=6, seed=0):
    """Inputs with a padded border (R = 0) and an ignored block (P = 255) straddling it."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator, dtype=torch.float64) * 255
    probs = torch.rand(batch, classes, height, width, generator=generator, dtype=torch.float64).softmax(dim=1)
    roi = torch.ones(batch, height, width, dtype=torch.float64)
    roi[0, -2:] = 0
    roi[1, :, :2] = 0
    pseudo_label = torch.randint(0, classes, (batch, height, width), generator=generator)
    pseudo_label[:, 2:6, 0:4] = IGNORE_INDEX
    return image, probs, roi, pseudo_label


def test_bilateral_features_embed_the_kernel():
    sigma_rgb, sigma_xy = 40.0, 2.5
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 6, 5, generator=generator, dtype=torch.float64) * 255
    values = torch.rand(2, 4, 6, 5, generator=generator, dtype=torch.float64)
    for image, value in zip(images, values):
        expected = torch.zeros(4, 6, 5, dtype=torch.float64)
        for r1 in range(6):
            for c1 in range(5):
                for r2 in range(6):
                    for c2 in range(5):
                        spatial = ((r1 - r2) ** 2 + (c1 - c2) ** 2) / (2 * sigma_xy**2)
                        colour = (image[:, r1, c1] - image[:, r2, c2]).square().sum() / (2 * sigma_rgb**2)
                        expected[:, r1, c1] += torch.exp(-spatial - colour) * value[:, r2, c2]
        features = bilateral_features(image, sigma_rgb, sigma_xy)  # the embedding the lattice filters
        filtered = exact_filter(features, value.flatten(1).T).T.reshape(4, 6, 5)
        torch.testing.assert_close(filtered, expected, rtol=1e-10, atol=1e-12)


def test_kernel_diagonal_is_one():
    image = torch.rand(3, 6, 5, dtype=torch.float64) * 255
    features = bilateral_features(image, 15.0, 50.0)
    # Filtering the identity returns K itself.
    kernel = exact_filter(features, torch.eye(30, dtype=torch.float64))
    torch.testing.assert_close(kernel.diagonal(), torch.ones(30, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(kernel, pair_kernel(image, 15.0, 50.0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_loss_matches_naive_formula(scale, exact_energy):
    image, probs, roi, pseudo_label = random_inputs()
    sigma_rgb, sigma_xy, weight = 60.0, 6.0, 1e-3
    loss = exact_energy(
        image, probs, roi, pseudo_label, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, scale=scale, weight=weight
    )
    expected, _, _ = naive_terms(image, probs, roi, pseudo_label, sigma_rgb, sigma_xy, scale)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(weight * expected.item(), rel=1e-10)


def test_gate_rules_change_the_loss():
    """The ignore region opens the gate, and the gate is 0 on padding outside it."""
    image, probs, roi, pseudo_label = random_inputs()
    labelled = pseudo_label.clone()
    labelled[labelled == IGNORE_INDEX] = 0
    with_ignore = dense_energy_loss(image, probs, roi, pseudo_label, scale=1.0)
    without_ignore = dense_energy_loss(image, probs, roi, labelled, scale=1.0)
    # Gates of 1 instead of R − max s < 1 make the energy more negative.
    assert with_ignore < without_ignore < 0


def test_default_sigma_xy_is_scaled(exact_energy):
    image, probs, roi, pseudo_label = random_inputs(height=12, width=10)
    loss = exact_energy(image, probs, roi, pseudo_label, weight=1.0)
    expected, _, _ = naive_terms(image, probs, roi, pseudo_label, 15.0, 100.0, 0.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)


def test_gradient_is_the_released_one(exact_energy):
    image, probs, roi, pseudo_label = random_inputs()
    sigma_rgb, sigma_xy, weight = 60.0, 6.0, 1e-3
    probs = probs.requires_grad_()
    loss = exact_energy(
        image, probs, roi, pseudo_label, sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, scale=1.0, weight=weight
    )
    loss.backward()
    _, as_, _ = naive_terms(image, probs.detach(), roi, pseudo_label, sigma_rgb, sigma_xy, 1.0)
    batch = probs.shape[0]
    released = -2 * weight * as_ * roi[:, None] / batch
    torch.testing.assert_close(probs.grad, released, rtol=1e-10, atol=1e-15)
    # It is not the exact derivative (the gate depends on s, and the kernel's second term differs).
    exact_probs = probs.detach().clone().requires_grad_()
    (weight * naive_terms(image, exact_probs, roi, pseudo_label, sigma_rgb, sigma_xy, 1.0)[0]).backward()
    assert not torch.allclose(exact_probs.grad, released)


def test_gradient_flows_through_the_bilinear_downscale(exact_energy):
    image, probs, roi, pseudo_label = random_inputs()
    probs = probs.requires_grad_()
    loss = exact_energy(image, probs, roi, pseudo_label, sigma_rgb=60.0, sigma_xy=6.0, scale=0.5, weight=1.0)
    loss.backward()
    _, as_, small_roi = naive_terms(image, probs.detach(), roi, pseudo_label, 60.0, 6.0, 0.5)
    released = -2 * as_ * small_roi[:, None] / probs.shape[0]
    leaf = probs.detach().clone().requires_grad_()
    small = F.interpolate(leaf, scale_factor=0.5, mode="bilinear", align_corners=False, recompute_scale_factor=True)
    (expected,) = torch.autograd.grad(small, leaf, grad_outputs=released)
    torch.testing.assert_close(probs.grad, expected, rtol=1e-10, atol=1e-15)


def test_loss_is_the_mean_of_per_image_losses():
    image, probs, roi, pseudo_label = random_inputs(batch=3)
    energy = functools.partial(dense_energy_loss, scale=1.0, weight=1.0)
    batch_loss = energy(image, probs, roi, pseudo_label)
    singles = [energy(image[b : b + 1], probs[b : b + 1], roi[b : b + 1], pseudo_label[b : b + 1]) for b in range(3)]
    assert batch_loss.item() == pytest.approx(sum(s.item() for s in singles) / 3, rel=1e-12)
    reordered = energy(image.flip(0), probs.flip(0), roi.flip(0), pseudo_label.flip(0))
    assert reordered.item() == pytest.approx(batch_loss.item(), rel=1e-12)


def test_edge_aligned_segmentation_has_lower_energy():
    """On a two-colour image, labels following the colour edge beat random labels of equal confidence."""
    height, width = 16, 16
    image = torch.zeros(1, 3, height, width)
    image[..., width // 2 :] = 255
    side = torch.zeros(height, width, dtype=torch.long)
    side[:, width // 2 :] = 1
    noisy_side = torch.randint(0, 2, (height, width), generator=torch.Generator().manual_seed(0))
    roi = torch.ones(1, height, width)
    pseudo_label = torch.zeros(1, height, width, dtype=torch.long)

    def confident(labels: torch.Tensor) -> torch.Tensor:
        # 0.9 on the chosen class everywhere, so both segmentations have the same gate (0.1).
        return (0.1 + 0.8 * F.one_hot(labels, 2).permute(2, 0, 1).float())[None]

    aligned = dense_energy_loss(image, confident(side), roi, pseudo_label, scale=1.0)
    noisy = dense_energy_loss(image, confident(noisy_side), roi, pseudo_label, scale=1.0)
    assert aligned < noisy < 0


def test_fp32_under_autocast_and_no_gradient_for_other_inputs(exact_energy):
    image, probs, roi, pseudo_label = (t.float() if t.is_floating_point() else t for t in random_inputs())
    reference = exact_energy(image, probs, roi, pseudo_label)
    image.requires_grad_()
    leaf = probs.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = exact_energy(image, leaf, roi, pseudo_label)
    assert loss.dtype == torch.float32
    same_input = exact_energy(image.detach(), leaf.detach().float(), roi, pseudo_label)
    assert loss.item() == pytest.approx(same_input.item(), rel=1e-6)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)  # bf16 rounding of the input only
    loss.backward()
    assert leaf.grad.dtype == torch.bfloat16
    assert image.grad is None


# --- the permutohedral lattice (the O(N) approximation) --------------------------------------


def photo_features(tiny_data, index: int, sigma_xy: float = 50.0 * 64 / 224):
    """Bilateral features of a real 64×64 image of the synthetic dataset (textures, edges)."""
    from cosa.data.io import read_image

    path = sorted((tiny_data / "images").iterdir())[index]
    return bilateral_features(read_image(path).double(), 15.0, sigma_xy)


def relative_error(approximate: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approximate - exact).norm() / exact.norm())


def test_the_lattice_kernel_is_a_unit_gaussian_up_to_its_cut_tails():
    points = torch.cat([torch.zeros(1, 5), torch.randn(20_000, 5, generator=torch.Generator().manual_seed(0)) * 1.5])
    impulse = torch.zeros(len(points), 1, dtype=torch.float64)
    impulse[0] = 1
    response = permutohedral_filter(points.double(), impulse)[1:, 0]
    squared_distance = points[1:].double().square().sum(1)
    near = response > 1e-4
    # log response = log c − d²/(2s²): the fitted width s is the kernel's, 1, within 10%.
    design = torch.stack([torch.ones(int(near.sum()), dtype=torch.float64), -squared_distance[near] / 2], 1)
    log_scale, inverse_variance = torch.linalg.lstsq(design, response[near].log()[:, None]).solution[:, 0]
    assert inverse_variance.item() == pytest.approx(1.0, abs=0.1)
    assert 0.6 < log_scale.exp().item() < 1.0


@pytest.mark.parametrize("index", [0, 5, 11])
def test_the_lattice_is_the_exact_filter_scaled_down_by_its_cut_tails_on_real_images(tiny_data, index):
    features = photo_features(tiny_data, index)
    values = torch.rand(len(features), 21, generator=torch.Generator().manual_seed(index), dtype=torch.float64)
    values = values.softmax(dim=1)
    exact = exact_filter(features, values)
    lattice = permutohedral_filter(features, values)
    ratio = lattice.sum() / exact.sum()
    assert 0.3 < float(ratio) < 0.8  # the lattice's cut tails (cosa.method.permutohedral)
    assert relative_error(lattice / ratio, exact) < 0.12  # otherwise the same shape


def test_the_energy_with_the_lattice_follows_the_exact_one(tiny_data, monkeypatch):
    from cosa.data.io import read_image

    image = torch.stack([read_image(path).double() for path in sorted((tiny_data / "images").iterdir())[:2]])
    probs = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64).softmax(1)
    roi = torch.ones(2, 64, 64, dtype=torch.float64)
    pseudo_label = torch.full((2, 64, 64), IGNORE_INDEX)
    results = []
    for exact in (True, False):
        if exact:
            monkeypatch.setattr(dense_energy, "permutohedral_filter", exact_filter)
        else:
            monkeypatch.undo()
        leaf = probs.clone().requires_grad_()
        loss = dense_energy_loss(image, leaf, roi, pseudo_label, scale=1.0, sigma_xy=15.0, weight=1.0)
        loss.backward()
        results.append((loss.item(), leaf.grad.flatten()))
    (exact_loss, exact_grad), (lattice_loss, lattice_grad) = results
    assert 0.3 < lattice_loss / exact_loss < 0.8
    assert F.cosine_similarity(lattice_grad, exact_grad, dim=0) > 0.98


def test_a_batch_filters_each_image_on_its_own_lattice_and_the_table_layout_changes_nothing(tiny_data):
    """The GPU's table (a row per sort entry, :class:`cosa.method.permutohedral._Lattice`) and the
    CPU's compact one give the same sums; a batch gives each image's own."""
    features = torch.stack([photo_features(tiny_data, index) for index in (0, 5, 11)])
    values = torch.rand(3, len(features[0]), 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    one_by_one = torch.stack([permutohedral_filter(f, v) for f, v in zip(features, values)])
    torch.testing.assert_close(permutohedral_filter(features, values), one_by_one, rtol=0, atol=0)
    torch.testing.assert_close(permutohedral_filter(features, values, compact=False), one_by_one, rtol=1e-12, atol=0)


def test_features_too_spread_to_pack_give_nan_not_wrong_sums():
    features = torch.tensor([[0.0] * 5, [1e7] * 5], dtype=torch.float64)
    assert permutohedral_filter(features, torch.ones(2, 1, dtype=torch.float64)).isnan().all()
