"""The assignment network's EMA update."""

import pytest
import torch
from torch import nn

from cosa.models.ema import ema_update


def make_pair():
    target = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    source = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    for net, value in ((target, 0.0), (source, 1.0)):
        for tensor in [*net.parameters(), *net.buffers()]:
            if tensor.is_floating_point():
                tensor.data.fill_(value)
    source[1].num_batches_tracked.fill_(7)
    return target, source


def test_ema_moves_parameters_and_float_buffers_by_one_minus_momentum():
    target, source = make_pair()
    ema_update(target, source, momentum=0.9)
    for tensor in [*target.parameters(), target[1].running_mean, target[1].running_var]:
        assert torch.allclose(tensor, torch.full_like(tensor, 0.1))
    assert target[1].num_batches_tracked.item() == 7  # integer buffers are copied
    ema_update(target, source, momentum=0.9)
    assert target[0].weight.flatten()[0].item() == pytest.approx(0.19)  # 0.9·0.1 + 0.1·1


def test_ema_with_momentum_zero_copies_the_source():
    target, source = make_pair()
    ema_update(target, source, momentum=0.0)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))


def test_a_skipped_update_leaves_the_target_exactly_as_it_was():
    target, source = make_pair()
    ema_update(target, source, momentum=0.9)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    ema_update(target, source, momentum=0.9, skip=torch.tensor(True))
    assert all(torch.equal(before[key], value) for key, value in target.state_dict().items())
    ema_update(target, source, momentum=0.9, skip=torch.tensor(False))
    assert target[0].weight.flatten()[0].item() == pytest.approx(0.19)
