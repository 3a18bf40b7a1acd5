"""Six steps of the released training loop, replayed through cosa's trainer.

``tests/fixtures/official/released_trajectory.npz`` records what the released ``main.main()``
computed in six steps (its README says how): per step every loss term, the weight it entered the
loss with, each parameter group's learning rate and the pseudo-labels, and after the last step
the sum and L2 of every tensor of both networks. Here the same weights (by the fixture's rule),
batches and settings go through :meth:`cosa.engine.trainer.Trainer.fit`, the loop that ``cosa
train --recipe release`` runs, and everything is compared within the README's tolerances: losses
to 1e-5 relative, pseudo-labels pixel for pixel, final sums to 5e-5 of each tensor's L2, L2 to
1e-5 and the change of each tensor over the six steps to 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cosa.config import load_config
from cosa.data.classes import VOC_CLASSES
from cosa.engine.distributed import DistContext
from cosa.engine.trainer import Trainer

from conftest import make_folder_dataset, released_state

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "released_trajectory.npz"
# The released ViT's ImageNet head: in its state dict, never used; cosa's encoder has none.
UNUSED = "encoder.head."
# The fixture's four parameter groups (encoder without and with "norm" in the name, classifiers,
# decoder) differ only in their learning rate: cosa's two groups are backbone and heads.
GROUP_COLUMNS = ((0, 1), (2, 3))
TERMS = ("cls", "cls_aux", "c2s", "s2c", "reg")

pytestmark = pytest.mark.slow  # trains ViT-B for six steps


@pytest.fixture(scope="module")
def released() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def replay(released, tmp_path_factory):
    """The trainer after the six steps, and what each step computed."""
    root = make_folder_dataset(tmp_path_factory.mktemp("voc_classes"), [("a", "cat", None)], classes=VOC_CLASSES)
    cfg = load_config(
        "voc",
        "release",
        str(root),
        [
            "model.pretrained=none",
            "data.train_split=train",
            "data.crop_size=128",
            "train.batch_size=2",
            "train.iterations=6",
            "train.device=cpu",
            "optim.warmup_iters=2",
            "method.loss_warmup_iters=2",
        ],
    )
    trainer = Trainer(cfg, tmp_path_factory.mktemp("replay") / "run", DistContext(0, 1, 0, torch.device("cpu")))
    # As released, the assignment network is built like the online one, not copied from it.
    built_apart = not torch.equal(trainer.assignment.decoder.conv8.weight, trainer.online.decoder.conv8.weight)
    online = released_state(released)
    assignment = released_state(released, released["an_rule_prefix"])
    trainer.online.load_state_dict({key: value for key, value in online.items() if not key.startswith(UNUSED)})
    trainer.assignment.load_state_dict({key: value for key, value in assignment.items() if not key.startswith(UNUSED)})

    steps, original = [], trainer.train_step

    def recording(batch: dict):
        losses = original(batch)
        steps.append((losses, [group["lr"] for group in trainer.optimizer.param_groups]))
        return losses

    trainer.train_step = recording
    batches = [
        {
            "weak": torch.from_numpy(released["weak"][step]),
            "strong": torch.from_numpy(released["strong"][step]),
            "labels": torch.from_numpy(released["labels"][step]),
            "box": torch.from_numpy(released["box"][step].astype(np.int64)),
        }
        for step in range(len(released["weak"]))
    ]
    trainer.fit(batches)
    return trainer, steps, online, assignment, built_apart


def test_the_rebuilt_weights_are_the_released_ones(released):
    for prefixes, sums in ((None, released["on_init_sum"]), (released["an_rule_prefix"], released["an_init_sum"])):
        rebuilt = [float(value.double().sum()) for value in released_state(released, prefixes).values()]
        np.testing.assert_allclose(rebuilt, sums, rtol=1e-6, atol=1e-3)


def test_the_assignment_network_starts_apart_from_the_online_one(replay):
    assert replay[-1]


def test_each_step_has_the_released_losses_weights_and_learning_rates(replay, released):
    steps = replay[1]
    assert len(steps) == 6
    for step, (losses, rates) in enumerate(steps):
        for term in TERMS:
            expected = released[f"loss_{term}"][step]
            assert float(losses.terms[term].detach()) == pytest.approx(expected, rel=1e-5), (step, term)
        assert float(losses.total.detach()) == pytest.approx(released["loss_total"][step], rel=1e-5), step
        assert [losses.weights[term] for term in TERMS] == pytest.approx(released["loss_weights"][step], rel=1e-12)
        for rate, columns in zip(rates, GROUP_COLUMNS):
            for column in columns:
                assert rate == pytest.approx(released["lr"][step, column], rel=1e-9), (step, column)


def test_each_step_has_the_released_pseudo_labels_and_class_scores(replay, released):
    steps = replay[1]
    for step, (losses, _) in enumerate(steps):
        for ours, name in ((losses.cpl, "cpl"), (losses.aux_cpl, "cpl_aux"), (losses.spl.argmax(dim=1), "spl_label")):
            differing = int((ours != torch.from_numpy(released[name][step]).long()).sum())
            assert differing == 0, f"step {step}: {differing} pixels of {name} differ"
        np.testing.assert_allclose(losses.logits.detach().numpy(), released["on_cls"][step], rtol=0, atol=5e-5)


@pytest.mark.parametrize("network", ["online", "assignment"])
def test_after_six_steps_every_tensor_is_where_the_released_loop_left_it(replay, released, network):
    trainer, _, online, assignment, _ = replay
    prefix = "on" if network == "online" else "an"
    ours = getattr(trainer, network).state_dict()
    initial = online if network == "online" else assignment
    checked = 0
    for index, key in enumerate(map(str, released["state_keys"])):
        if key.startswith(UNUSED):
            continue
        tensor = ours[key].double()
        l2 = released[f"{prefix}_l2"][index]
        assert float(tensor.sum()) == pytest.approx(released[f"{prefix}_sum"][index], abs=5e-5 * l2), key
        assert float(tensor.norm()) == pytest.approx(l2, rel=1e-5), key
        delta = float((tensor - initial[key].double()).norm())
        assert delta == pytest.approx(released[f"{prefix}_delta_l2"][index], rel=1e-3, abs=1e-12), key
        checked += 1
    assert checked == len(ours)
