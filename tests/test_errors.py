"""One line for the user, whole: messages are never cut, whatever wraps them."""

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from cosa.errors import CosaError, library_reason, out_of_memory_message, user_message


class Failing(Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise CosaError("img.png: cannot read image (broken data stream when reading image file;\nthe file is cut)")


def test_a_message_from_a_loader_worker_is_the_whole_message_on_one_line():
    with pytest.raises(CosaError) as error:
        next(iter(DataLoader(Failing(), num_workers=1)))
    assert "Original Traceback" in str(error.value)  # PyTorch folded the worker's traceback into it
    assert user_message(error.value) == (
        "img.png: cannot read image (broken data stream when reading image file; the file is cut)"
    )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        # OmegaConf: the reason, then lines of internals.
        (
            "Value 'abc' of type 'str' could not be converted to Integer\n    full_key: train.iterations\n"
            "    object_type=TrainConfig",
            "Value 'abc' of type 'str' could not be converted to Integer",
        ),
        # A sentence that goes on past a line break is kept whole.
        ("cannot read the header of\nthe file. Try another file.", "cannot read the header of the file"),
        # torch's refusal of a pickled object: advice in bold, then the reason after its marker.
        (
            "Weights only load failed. This file can still be loaded, to do so you have two options, \x1b[1mdo "
            "those steps only if you trust the source of the checkpoint\x1b[0m. \n\t(1) In PyTorch 2.6 ...\n\n"
            "WeightsUnpickler error: Unsupported global: GLOBAL x.A was not an allowed global by default. "
            "Please use `torch.serialization.add_safe_globals([A])`",
            "Unsupported global: GLOBAL x.A was not an allowed global by default",
        ),
        ("", "RuntimeError"),
    ],
)
def test_a_librarys_reason_is_its_first_sentence_whole(message, reason):
    assert library_reason(RuntimeError(message)) == reason


CPU_OUT_OF_MEMORY = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 1302921216 bytes. Error code 12 (Cannot allocate memory)"
)
SIZES = (
    "lower the sizes that set it, for training data.crop_size and train.batch_size, for evaluation eval.size, "
    "eval.batch_size and eval.scales (cosa predict: --size, --batch-size, --scales); a training run resumes "
    "with new eval.* values (--resume)"
)


@pytest.mark.parametrize(
    ("error", "where"),
    [
        (RuntimeError(CPU_OUT_OF_MEMORY), "1.2 GiB more needed on the CPU"),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity"),
            "2.00 GiB more needed on the GPU",
        ),
        (MemoryError(), "in Python"),
    ],
)
def test_running_out_of_memory_names_the_sizes_to_lower(error, where):
    assert out_of_memory_message(error) == f"out of memory ({where}): {SIZES}"


def test_other_errors_are_not_taken_for_running_out_of_memory():
    assert out_of_memory_message(RuntimeError("shapes do not match")) is None
