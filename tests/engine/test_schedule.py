"""The learning-rate schedule and the optimiser's parameter groups, against values computed by hand."""

import pytest

from cosa.config.schema import ModelConfig, OptimConfig
from cosa.engine.schedule import build_optimizer, lr_factor
from cosa.models.network import build_network


@pytest.mark.parametrize(
    "step, factor",
    [
        (0, 1e-6),  # the warm-up starts at warmup_ratio
        (750, 0.5 + 0.5e-6),  # halfway: 1 − (1 − 750/1500)(1 − 1e-6)
        (1500, (1 - 1500 / 32000) ** 0.9),  # then the poly decay, counted from step 0 as released
        (16000, 0.5**0.9),
        (32000, 0.0),
    ],
)
def test_released_voc_schedule(step, factor):
    assert lr_factor(step, 32000, OptimConfig()) == pytest.approx(factor, rel=1e-12, abs=1e-15)


def test_heads_learn_ten_times_faster():
    network = build_network(ModelConfig(backbone="mobilenetv2_050", pretrained="none"), 3, pretrained=False)
    optimizer = build_optimizer(network, OptimConfig())
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates[id(network.classifier.weight)] == pytest.approx(6e-4)
    assert rates[id(next(network.encoder.parameters()))] == pytest.approx(6e-5)
