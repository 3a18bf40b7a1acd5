"""``cosa predict`` (protocol options, tags, logits, VOC server layout, CRF) and the CRF worker pool.

Predictions need a checkpoint, not a trained one: an untrained network saved as a checkpoint
(``TINY_OVERRIDES`` config) keeps these tests at a second or two each.
"""

import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cosa.config.schema import CrfConfig
from cosa.data.classes import VOC_CLASSES
from cosa.data.io import read_mask
from cosa.data.layouts import read_class_names
from cosa.engine.crf import CrfPool
from cosa.engine.inference import mask_absent
from cosa.engine.predict import VOC_SUBMISSION_DIR, read_tags
from cosa.errors import CosaError

from conftest import assert_one_line_error, one_line, predict_argv, run_cli, save_untrained_checkpoint


def has_pydensecrf() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


needs_crf = pytest.mark.skipif(not has_pydensecrf(), reason="the optional crf extra (pydensecrf2) is not installed")


@pytest.fixture(scope="module")
def checkpoint(untrained_checkpoint):
    return untrained_checkpoint


@pytest.fixture
def images(tiny_data, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("val_0000.png", "val_0001.png", "val_0002.png"):
        shutil.copy(tiny_data / "images" / name, folder / name)
    return folder


def predict(capsys, checkpoint, inputs, out, *options):
    return run_cli(capsys, *predict_argv(checkpoint, inputs, out, *options))


def test_single_scale_writes_masks_overlays_and_cams(checkpoint, images, tmp_path, capsys):
    code, out, err = predict(capsys, checkpoint, images, tmp_path / "out")
    assert code == 0 and "wrote 3 masks" in out and "3/3" in err
    for name in ("val_0000", "val_0001", "val_0002"):
        assert Image.open(tmp_path / "out" / f"{name}.png").mode == "P"
        assert tuple(read_mask(tmp_path / "out" / f"{name}.png").shape) == (64, 64)
        for picture in (f"{name}_overlay.jpg", f"{name}_cam.jpg"):
            assert Image.open(tmp_path / "out" / picture).size == (64, 64)
    assert not list((tmp_path / "out").glob("*.npz"))


def test_save_logits_and_tag_masked_prediction(checkpoint, images, tmp_path, capsys):
    assert predict(capsys, checkpoint, images, tmp_path / "plain", "--save-logits")[0] == 0
    tags = tmp_path / "tags.csv"
    tags.write_text("image,labels\nval_0000.png,ball;star\nval_0001.png,\nval_0002.png,boat\n")
    assert predict(capsys, checkpoint, images, tmp_path / "tagged", "--save-logits", "--tags", tags)[0] == 0
    present = {"val_0000": [1, 0, 0, 1, 0, 0], "val_0001": [0] * 6, "val_0002": [0, 0, 0, 0, 0, 1]}
    for name, tag_vector in present.items():
        plain, tagged = np.load(tmp_path / "plain" / f"{name}.npz"), np.load(tmp_path / "tagged" / f"{name}.npz")
        assert plain["seg"].shape == (7, 64, 64) and plain["cam"].shape == (6, 64, 64)
        assert plain["seg"].dtype == np.float32 and plain["cam"].dtype == np.float32
        np.testing.assert_array_equal(plain["seg"], tagged["seg"])  # saved before any masking
        np.testing.assert_array_equal(read_mask(tmp_path / "plain" / f"{name}.png").numpy(), plain["seg"].argmax(0))
        masked = mask_absent(torch.from_numpy(tagged["seg"])[None], torch.tensor([tag_vector]))[0].argmax(0)
        written = read_mask(tmp_path / "tagged" / f"{name}.png")
        assert torch.equal(written.long(), masked)
        assert set(written.unique().tolist()) <= {0} | {k + 1 for k, on in enumerate(tag_vector) if on}


@pytest.mark.parametrize(
    "rows, fragments",
    [
        (
            "val_0000.png,ball\nval_0001.png,ball;unicorn\nval_0002.png,\n",
            ["tags.csv:3", "unicorn", "(the model's classes: ball, block, tent, star, ring, boat)"],
        ),
        ("val_0000.png,ball\nval_9999.png,ball\n", ["tags.csv:3", "val_9999.png", "not among the inputs"]),
        ("val_0000.png,ball\nval_0001.png,ring\n", ["tags.csv", "val_0002"]),
    ],
)
def test_bad_tags_give_one_line_errors(checkpoint, images, tmp_path, capsys, rows, fragments):
    tags = tmp_path / "tags.csv"
    tags.write_text("image,labels\n" + rows)
    code, _, err = predict(capsys, checkpoint, images, tmp_path / "out", "--tags", tags)
    assert_one_line_error(code, err, *fragments)


def test_voc_submission_needs_the_voc_classes(checkpoint, images, tmp_path, capsys):
    code, _, err = predict(capsys, checkpoint, images, tmp_path / "out", "--voc-submission", tmp_path / "voc")
    assert_one_line_error(code, err, checkpoint, "20 PASCAL VOC classes")
    assert not (tmp_path / "voc").exists()


def test_voc_submission_layout(images, tmp_path, capsys):
    voc_checkpoint = save_untrained_checkpoint(tmp_path / "voc.pt", VOC_CLASSES)
    code, _, _ = predict(capsys, voc_checkpoint, images, tmp_path / "out", "--voc-submission", tmp_path / "voc")
    assert code == 0
    results = tmp_path / "voc" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert results == tmp_path / "voc" / VOC_SUBMISSION_DIR
    assert sorted(path.name for path in results.iterdir()) == ["val_0000.png", "val_0001.png", "val_0002.png"]
    for path in results.iterdir():
        assert Image.open(path).mode == "P"
        assert torch.equal(read_mask(path), read_mask(tmp_path / "out" / path.name))


def test_cam_only_masks_are_thresholded_cams(tiny_data, images, tmp_path, capsys):
    cam_only = save_untrained_checkpoint(
        tmp_path / "cam.pt", read_class_names(tiny_data / "classes.txt"), "method.recipe=cam-only"
    )
    tags = tmp_path / "tags.csv"
    tags.write_text("image,labels\nval_0000.png,ball;star\nval_0001.png,ring\nval_0002.png,boat\n")
    code, out, _ = predict(capsys, cam_only, images, tmp_path / "out", "--save-logits", "--tags", tags)
    assert code == 0 and out.endswith("(scale 1.0, size 64, assignment network, thresholded CAMs, tag-masked)\n")
    cam = torch.from_numpy(np.load(tmp_path / "out" / "val_0000.npz")["cam"])
    strongest, index = (cam * torch.tensor([1.0, 0, 0, 1, 0, 0])[:, None, None]).max(0)
    expected = torch.where(strongest > 0.5, index + 1, torch.zeros_like(index))
    assert torch.equal(read_mask(tmp_path / "out" / "val_0000.png").long(), expected)


def test_a_folder_of_100_images(checkpoint, tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(100):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"image_{k:03d}.png")
    code, out, err = predict(capsys, checkpoint, folder, tmp_path / "out", "--batch-size", 16)
    assert code == 0 and "wrote 100 masks" in out and "100/100" in err
    masks = sorted((tmp_path / "out").glob("image_???.png"))
    assert len(masks) == 100 and tuple(read_mask(masks[-1]).shape) == (32, 32)


READS = "cosa predict reads .jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff files and does not search subfolders"


def test_what_else_a_folder_holds_is_skipped_and_told_in_one_line(checkpoint, images, tmp_path, capsys):
    (images / "raw").mkdir()
    (images / "._val_0000.png").write_bytes(b"\x00\x05\x16\x07")  # macOS metadata with the image's suffix
    (images / ".DS_Store").write_bytes(b"\x00")
    (images / "animation.gif").write_bytes(b"GIF89a")
    (images / "phone.HEIC").write_bytes(b"heic")
    (images / "README").write_text("mine")
    for i in range(4):
        (images / f"notes_{i}.txt").write_text("mine")
    code, out, err = predict(capsys, checkpoint, images, tmp_path / "out")
    assert code == 0 and "wrote 3 masks" in out, err
    assert [line for line in err.splitlines() if "skipped" in line] == [
        "skipped in the input folders: 1 hidden file (.DS_Store); 1 macOS metadata file (._val_0000.png); "
        "1 file without a suffix (README); 1 .gif file (animation.gif); 4 .txt files (notes_0.txt, notes_1.txt, "
        f"notes_2.txt, …); 1 .heic file (phone.HEIC); 1 subfolder (raw). {READS}"
    ]
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == [
        "val_0000.png",
        "val_0001.png",
        "val_0002.png",
    ]


def test_a_folder_without_images_it_reads_is_one_line_saying_what_it_holds(checkpoint, tmp_path, capsys):
    folder = tmp_path / "phone"
    folder.mkdir()
    for name in ("a.heic", "b.heic"):
        (folder / name).write_bytes(b"heic")
    code, _, err = predict(capsys, checkpoint, folder, tmp_path / "out")
    assert_one_line_error(
        code, err, f"no images found in {folder}; skipped in the input folders: 2 .heic files (a.heic, b.heic). {READS}"
    )
    assert not (tmp_path / "out").exists()


@needs_crf
def test_predict_crf_masks_do_not_depend_on_the_workers(checkpoint, images, tmp_path, capsys):
    for workers in (0, 2):
        code, _, _ = predict(capsys, checkpoint, images, tmp_path / f"crf{workers}", "--crf", "--crf-workers", workers)
        assert code == 0
    for name in ("val_0000.png", "val_0001.png", "val_0002.png"):
        assert torch.equal(read_mask(tmp_path / "crf0" / name), read_mask(tmp_path / "crf2" / name))


@needs_crf
def test_crf_pool_gives_the_same_labels_with_one_or_two_workers():
    generator = torch.Generator().manual_seed(0)
    jobs = [
        (
            torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator),
            torch.randn(5, h, w, generator=generator) * 3,
        )
        for h, w in ((24, 40), (33, 17), (48, 48))
    ]
    with CrfPool(CrfConfig(), workers=1) as in_process, CrfPool(CrfConfig(), workers=2) as pool:
        alone, spread = in_process.labels(jobs), pool.labels(jobs)
    for (image, _), a, b in zip(jobs, alone, spread):
        assert a.shape == tuple(image.shape[-2:])
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_missing_pydensecrf_names_the_extra(checkpoint, images, tiny_data, tmp_path, capsys, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # makes any import of it fail
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    if command == "predict":
        code, _, err = predict(capsys, checkpoint, images, tmp_path / "out", "--crf")
    else:
        code, _, err = run_cli(capsys, "evaluate", "--checkpoint", checkpoint, "--data", tiny_data, "--crf")
    assert_one_line_error(code, err, "pip install 'cosa[crf]'")


def test_a_tags_row_with_more_fields_than_the_header_is_refused(tmp_path):
    tags = tmp_path / "tags.csv"
    tags.write_text("image,labels\na.png,cat,dog\nb.png,dog\n")  # ',' instead of ';': 'dog' would be dropped
    with pytest.raises(CosaError) as error:
        read_tags(tags, ("cat", "dog"), ["a", "b"])
    one_line(error, f"{tags}:2: more fields than the header's 2 (separate class names with ';')")
