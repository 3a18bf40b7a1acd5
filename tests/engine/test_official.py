"""Importing the authors' released checkpoints.

The official file is built here for a ViT-Ti/16-sized encoder, and an independent reference of
the released forward pass reads its names directly: patch embedding, the 14×14 positional grid
resampled bicubically, timm blocks (qkv bias, LayerNorm eps 1e-6), the auxiliary map after
block −3, the two classifiers and the bias-free LargeFOV. Files are also written exactly as the
released ``save_best`` writes them: the run's ``argparse.Namespace`` and a numpy mIoU beside the
weights, pickled by numpy 2 and by numpy 1.x.
"""

import argparse
import datetime
import math
import pathlib
import zipfile
from collections import OrderedDict
from functools import partial

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from cosa.cli.main import main
from cosa.config.load import config_from_dict
from cosa.data.classes import VOC_CLASSES
from cosa.engine.checkpoint import load_checkpoint
from cosa.engine.official import _architecture_overrides, convert_official, is_official_checkpoint
from cosa.engine.trained import load_trained
from cosa.errors import CosaError
from cosa.models.network import build_network

WIDTH, HEADS, GRID, CLASSES, DECODER = 192, 3, 14, 20, 512


def official_state(num_classes: int = CLASSES, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the released layout; LayerNorms and positions far from their defaults."""
    generator = torch.Generator().manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # with the unused ImageNet head
    shapes = {f"encoder.{key}": value.shape for key, value in vit.state_dict().items()}
    shapes.update(
        {
            "decoder.conv6.weight": (DECODER, WIDTH, 3, 3),
            "decoder.conv7.weight": (DECODER, DECODER, 3, 3),
            "decoder.conv8.weight": (num_classes + 1, DECODER, 1, 1),
            "classifier.weight": (num_classes, WIDTH, 1, 1),
            "aux_classifier.weight": (num_classes, WIDTH, 1, 1),
        }
    )
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if "norm" in key and key.endswith("weight"):
            state[key] = 1 + 0.2 * noise
        elif key.endswith("bias") or key.endswith(("pos_embed", "cls_token")):
            state[key] = 0.2 * noise
        else:
            state[key] = noise / math.sqrt(math.prod(shape[1:]))
    return state


def reference_forward(state: dict[str, torch.Tensor], images: torch.Tensor, aux_layer: int = -3) -> dict:
    """The released network's forward pass, written from the released model code."""
    encoder = {key[len("encoder.") :]: value for key, value in state.items() if key.startswith("encoder.")}
    patches = F.conv2d(images, encoder["patch_embed.proj.weight"], encoder["patch_embed.proj.bias"], stride=16)
    batch, _, height, width = patches.shape
    positions = encoder["pos_embed"]
    grid = positions[:, 1:].reshape(1, GRID, GRID, WIDTH).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False, antialias=False)
    positions = torch.cat([positions[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    tokens = torch.cat([encoder["cls_token"].expand(batch, -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
    tokens = tokens + positions
    depth = len({key.split(".")[1] for key in encoder if key.startswith("blocks.")})
    for index in range(depth):
        block = Block(WIDTH, HEADS, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        prefix = f"blocks.{index}."
        block.load_state_dict({key[len(prefix) :]: value for key, value in encoder.items() if key.startswith(prefix)})
        tokens = block.eval()(tokens)
        if index == depth + aux_layer:
            aux = tokens
    final = F.layer_norm(tokens, (WIDTH,), encoder["norm.weight"], encoder["norm.bias"], eps=1e-6)

    def to_map(sequence):
        return sequence[:, 1:].transpose(1, 2).reshape(batch, WIDTH, height, width)

    features, aux_features = to_map(final), to_map(aux)
    hidden = F.relu(F.conv2d(features, state["decoder.conv6.weight"], padding=5, dilation=5))
    hidden = F.relu(F.conv2d(hidden, state["decoder.conv7.weight"], padding=5, dilation=5))
    return {
        "cam": F.conv2d(features, state["classifier.weight"]),
        "aux_cam": F.conv2d(aux_features, state["aux_classifier.weight"]),
        "logits": F.conv2d(features.amax(dim=(2, 3), keepdim=True), state["classifier.weight"]).flatten(1),
        "seg": F.conv2d(hidden, state["decoder.conv8.weight"]),
    }


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(path, state dict) of an official file with an iteration entry."""
    state = official_state()
    path = tmp_path_factory.mktemp("official") / "cosa_voc.pth"
    torch.save({"model": state, "iteration": 1234}, path)
    return path, state


def assert_close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    scale = float(reference.abs().max())
    assert scale > 0.1  # the comparison means something
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5 * scale)


def test_converted_network_reproduces_the_released_forward(official):
    path, state = official
    payload = convert_official(path)
    cfg = config_from_dict(payload["config"], "converted")
    assert cfg.model.backbone == "vit_tiny_patch16_224" and cfg.model.pretrained == "none"
    assert payload["class_names"] == list(VOC_CLASSES) and payload["iteration"] == 1234
    assert payload["metrics"] is None and math.isnan(payload["best_miou"])
    assert payload["thresholds"]["cam"]["high"] == pytest.approx(0.7)
    network = build_network(cfg.model, CLASSES, pretrained=False)
    network.load_state_dict(payload["assignment"])
    assert not any(key.startswith("encoder.head.") for key in payload["online"])

    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))  # a 6×8 grid, not 14×14
    with torch.no_grad():
        ours = network.eval()(images)
        reference = reference_forward(state, images)
    for name in ("cam", "aux_cam", "seg", "logits"):
        assert_close(getattr(ours, name), reference[name])
    assert tuple(ours.seg.shape) == (2, CLASSES + 1, 6, 8)


def test_convert_command_and_direct_loading_agree(official, tmp_path, capsys):
    path, state = official
    target = tmp_path / "converted.pt"
    assert main(["convert-official", str(path), str(target)]) == 0
    assert "20 classes" in capsys.readouterr().out
    assert is_official_checkpoint(torch.load(path, weights_only=True))
    assert not is_official_checkpoint(load_checkpoint(target))
    converted = load_trained(target, torch.device("cpu"))
    direct = load_trained(path, torch.device("cpu"))
    assert converted.class_names == direct.class_names == VOC_CLASSES
    assert converted.iteration == direct.iteration == 1234
    for loaded in (converted, direct):
        weights = loaded.network.state_dict()
        assert set(weights) == {key for key in state if not key.startswith("encoder.head.")}
        assert all(torch.equal(weights[key], state[key]) for key in weights)


def test_convert_never_overwrites_its_source(official, capsys):
    path, _ = official
    before = path.read_bytes()
    assert main(["convert-official", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"OUT.pt {path} is the official checkpoint" in err
    assert path.read_bytes() == before


def test_convert_replaces_an_existing_checkpoint_only_with_overwrite(official, tmp_path, capsys):
    path, _ = official
    target = tmp_path / "last.pt"
    target.write_bytes(b"a run's checkpoint")
    assert main(["convert-official", str(path), str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{target} exists" in err and "--overwrite" in err
    assert target.read_bytes() == b"a run's checkpoint"
    assert main(["convert-official", str(path), str(target), "--overwrite"]) == 0
    assert not is_official_checkpoint(load_checkpoint(target))


def without(state, key):
    return {name: value for name, value in state.items() if name != key}


def released_args(**changes) -> argparse.Namespace:
    """A run's args as the released main.py pickles them (ViT-Ti here, the fixture's width)."""
    fields = dict(
        name="HS_H05",
        model="vit",
        backbone="vit_tiny_patch16_224",
        decoder="largefov",
        pretrained=True,
        aux_layer=-3,
        num_classes=21,
        output_dir=pathlib.PosixPath("/media/work_dirs/HS_H05"),
        scales=(0.5, 2),
        pseudo_scales=[1.0, 0.5, 1.5],
        eval_threshold_filters=None,
        lr=6e-5,
        momentum=0.9995,
        usegmm=True,
        dataset="VOC12",
        seed=1234,
        finalval=True,
        device="cuda",
    )
    return argparse.Namespace(**{**fields, **changes})


def released_file(state, args=None, result=71.23, s_or_t="t", epoch=24000) -> dict:
    """What the released ``torch_helper.save_best`` saves."""
    args = released_args() if args is None else args
    return {"s_or_t": s_or_t, "model": state, "epoch": epoch, "args": args, "result": result}


class Ordered(OrderedDict):
    """An OrderedDict subclass: loading it would import this module, so it must be refused."""


BAD_FILES = {
    "not a dict": (lambda state: [1, 2, 3], "not an official CoSA checkpoint"),
    "no model entry": (lambda state: {"state_dict": state}, "not an official CoSA checkpoint"),
    "pickled object": (lambda state: {"model": state, "extra": nn.Identity()}, "cannot read checkpoint"),
    "class count": (lambda state: {"model": official_state(num_classes=7)}, "7 classes"),
    "missing key": (lambda state: {"model": without(state, "decoder.conv7.weight")}, "'decoder.conv7.weight'"),
    "wrong shape": (
        lambda state: {"model": {**state, "encoder.pos_embed": torch.zeros(1, 50, WIDTH)}},
        "'encoder.pos_embed' has shape (1, 50, 192)",
    ),
    "unexpected key": (
        lambda state: {"model": {**state, "encoder.fc_norm.weight": torch.ones(WIDTH)}},
        "'encoder.fc_norm.weight'",
    ),
    "module as args": (lambda state: released_file(state, args=nn.Identity()), "cannot read checkpoint"),
    "datetime in args": (
        lambda state: released_file(state, released_args(start=datetime.datetime(2024, 3, 1))),
        "GLOBAL datetime.datetime",
    ),
    # Only PosixPath is allowed: the released runs wrote that and nothing else from pathlib.
    "other path in args": (
        lambda state: released_file(state, released_args(log=pathlib.PurePosixPath("/a"))),
        "GLOBAL pathlib.PurePosixPath",
    ),
    "OrderedDict subclass": (lambda state: {"model": Ordered(state)}, "cannot read checkpoint"),
    "float32 result": (lambda state: released_file(state, result=np.float32(71.2)), "numpy.dtypes.Float32DType"),
    "args not a Namespace": (lambda state: released_file(state, args={"aux_layer": -3}), "argparse.Namespace"),
    "aux_layer type": (lambda state: released_file(state, released_args(aux_layer="-3")), "args.aux_layer is '-3'"),
    "aux_layer range": (lambda state: released_file(state, released_args(aux_layer=-13)), "12-block encoder"),
    "aux_layer bool": (lambda state: released_file(state, released_args(aux_layer=True)), "args.aux_layer is True"),
    "backbone type": (lambda state: released_file(state, released_args(backbone=16)), "args.backbone is 16"),
    "s_or_t": (lambda state: released_file(state, s_or_t="both"), "s_or_t is 'both'"),
    "result type": (lambda state: released_file(state, result="71.2"), "result is '71.2'"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_give_one_line_errors_naming_the_file(official, tmp_path, capsys, case):
    make, fragment = BAD_FILES[case]
    path = tmp_path / "bad.pth"
    torch.save(make(official[1]), path)
    with pytest.raises(CosaError) as error:
        convert_official(path)
    assert str(path) in str(error.value) and fragment in str(error.value) and "\n" not in str(error.value)
    assert main(["convert-official", str(path), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and fragment in err
    assert not (tmp_path / "out.pt").exists()


def test_direct_loading_reports_official_errors_and_keeps_the_cosa_message(official, tmp_path):
    broken = tmp_path / "broken.pth"
    torch.save({"model": without(official[1], "classifier.weight")}, broken)
    with pytest.raises(CosaError, match="classifier.weight"):
        load_trained(broken, torch.device("cpu"))
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CosaError, match="not a cosa checkpoint"):
        load_trained(other, torch.device("cpu"))


def test_other_class_counts_need_a_preset_and_names(tmp_path):
    path = tmp_path / "seven.pth"
    torch.save({"model": official_state(num_classes=7)}, path)
    with pytest.raises(CosaError, match="pass their class names"):
        convert_official(path, preset="voc")
    names = [f"class{i}" for i in range(7)]
    payload = convert_official(path, preset="voc", overrides=["eval.size=224"], class_names=names)
    assert payload["class_names"] == names and payload["config"]["eval"]["size"] == 224


NUMPY2_SCALAR, NUMPY1_SCALAR = b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"


def as_numpy1_pickle(path) -> None:
    """Rewrite a torch file's pickle as numpy 1.x wrote it: scalars rebuilt by ``numpy.core.multiarray``."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            if info.filename.endswith("/data.pkl"):
                # torch pickles with protocol 2, whose GLOBAL opcode spells "module\nname\n" as
                # newline-terminated text: no length byte to adjust. Fail loudly if that changes.
                assert data.count(NUMPY2_SCALAR) == 1
                data = data.replace(NUMPY2_SCALAR, NUMPY1_SCALAR)
            archive.writestr(info, data)


def test_released_file_loads_everywhere_with_its_settings(official, tmp_path, capsys):
    state = official[1]
    path = tmp_path / "best_seg.pth"
    torch.save(released_file(state), path)
    payload = convert_official(path)
    cfg = config_from_dict(payload["config"], "converted")
    assert cfg.model.backbone == "vit_tiny_patch16_224" and cfg.model.aux_layer == -3
    assert payload["iteration"] == 24000
    assert payload["official"] == {"network": "assignment", "result": 71.23, "iteration": 24000}
    assert all(torch.equal(value, state[key]) for key, value in payload["assignment"].items())

    direct = load_trained(path, torch.device("cpu"))
    assert direct.iteration == 24000 and direct.cfg.model.aux_layer == -3 and direct.class_names == VOC_CLASSES

    target = tmp_path / "converted.pt"
    assert main(["convert-official", str(path), str(target)]) == 0
    assert "iteration 24000, the assignment network (s_or_t='t')" in capsys.readouterr().out
    assert load_checkpoint(target)["official"]["network"] == "assignment"
    assert load_trained(target, torch.device("cpu")).iteration == 24000

    torch.save(released_file(state, s_or_t="s", result=None), path)
    assert convert_official(path)["official"] == {"network": "online", "result": None, "iteration": 24000}
    assert main(["convert-official", str(path), str(target), "--overwrite"]) == 0
    assert "the online network (s_or_t='s')" in capsys.readouterr().out


@pytest.mark.parametrize("numpy_version", [2, 1])
def test_numpy_results_load_as_numpy_2_and_1_pickled_them(official, tmp_path, numpy_version):
    path = tmp_path / "best_seg.pth"
    torch.save(released_file(official[1], result=round(np.float64(71.2345), 2)), path)
    if numpy_version == 1:
        as_numpy1_pickle(path)
    named = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert f"numpy.{'_core' if numpy_version == 2 else 'core'}.multiarray.scalar" in named
    payload = convert_official(path)
    assert payload["official"]["result"] == 71.23 and type(payload["official"]["result"]) is float
    assert load_trained(path, torch.device("cpu")).iteration == 24000


def test_aux_layer_comes_from_the_args(official, tmp_path):
    path, state = tmp_path / "best_seg.pth", official[1]
    torch.save(released_file(state, released_args(aux_layer=-2)), path)
    payload = convert_official(path)
    cfg = config_from_dict(payload["config"], "converted")
    assert cfg.model.aux_layer == -2
    network = build_network(cfg.model, CLASSES, pretrained=False)
    network.load_state_dict(payload["assignment"])
    images = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close(network.eval()(images).aux_cam, reference_forward(state, images, aux_layer=-2)["aux_cam"])


def test_backbone_name_from_the_args(official):
    state = official[1]
    released = _architecture_overrides(state, argparse.Namespace(backbone="vit_base_patch16_224", aux_layer=-3), "f")
    assert released == ["model.backbone=vit_base_patch16_224.orig_in21k_ft_in1k", "model.aux_layer=-3"]
    small = _architecture_overrides(state, argparse.Namespace(backbone="vit_small_patch16_224"), "f")
    assert small == ["model.backbone=vit_small_patch16_224"]
    unknown = _architecture_overrides(state, argparse.Namespace(backbone="vit_custom"), "f")  # timm lacks it
    assert unknown == ["model.backbone=vit_tiny_patch16_224"]  # the width rule


def test_only_official_files_get_the_extra_globals(official, tmp_path):
    path = tmp_path / "best_seg.pth"
    torch.save(released_file(official[1]), path)
    assert convert_official(path)["iteration"] == 24000
    with pytest.raises(Exception, match="argparse.Namespace"):  # the allow-list did not leak out
        torch.load(path, weights_only=True)
    cosa_file = tmp_path / "cosa.pt"
    torch.save({"format": "cosa-checkpoint", "args": released_args()}, cosa_file)
    with pytest.raises(CosaError, match="cannot read checkpoint .*argparse.Namespace"):
        load_checkpoint(cosa_file)
