"""User-facing errors.

A :class:`CosaError` is a problem with something the user gave us (a file, a config key, a
checkpoint). The command line prints its message as one line, without a traceback; anything
else that escapes is a bug and keeps its traceback.
"""

import itertools
import re

# Terminal colour and bold codes, which torch writes into some of its messages.
_ESCAPE_CODES = re.compile(r"\x1b\[[0-9;]*m")
# torch.load(weights_only=True) wraps the line naming the refused object in paragraphs of advice.
_WEIGHTS_REFUSAL = "WeightsUnpickler error:"


class CosaError(Exception):
    """An error caused by user input; the message names the file or key and what is wrong."""


def one_line(text: str) -> str:
    """``text`` with its lines joined by spaces: a message is printed whole, never cut at a line."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def user_message(error: CosaError) -> str:
    """The message of ``error`` on one line, also when a data-loader worker wrapped it.

    PyTorch re-raises a worker's exception with the worker's traceback folded into the message;
    the user needs what follows the traceback, the message itself.
    """
    message = str(error)
    marker = f"{CosaError.__module__}.{CosaError.__name__}: "
    if "Original Traceback" in message and marker in message:
        message = message.split(marker, 1)[1]
    return one_line(message)


def library_reason(error: BaseException) -> str:
    """Why another library (torch, OmegaConf, safetensors) failed, in whole sentences for a message
    of ours: its first sentence, on one line.

    Their messages go on with advice for programmers (torch's ``weights_only`` paragraphs) or
    internals (OmegaConf's ``full_key``/``object_type`` lines) that would only bury the reason.
    """
    text = _ESCAPE_CODES.sub("", str(error))
    if _WEIGHTS_REFUSAL in text:
        text = text.split(_WEIGHTS_REFUSAL, 1)[1]
    # The first paragraph: its lines up to a blank or an indented one (the start of details).
    lines = text.strip().splitlines()
    paragraph = lines[:1] + list(itertools.takewhile(lambda line: line.strip() and not line[0].isspace(), lines[1:]))
    sentence = one_line("\n".join(paragraph)).split(". ", 1)[0].rstrip(".")
    return sentence or type(error).__name__


# How torch says how much it could not allocate: the CPU allocator in bytes, CUDA's in GiB/MiB.
_CPU_REQUEST = re.compile(r"you tried to allocate (\d+) bytes")
_CUDA_REQUEST = re.compile(r"Tried to allocate ([\d.]+ [KMG]iB)")


def out_of_memory_message(error: BaseException) -> str | None:
    """The one line for running out of memory (torch on a CPU or GPU, or Python), None for other errors.

    The memory a command needs follows from the sizes it is given, so the line names them.
    """
    text = str(error)
    if (found := _CPU_REQUEST.search(text)) is not None:
        where = f"{int(found[1]) / 2**30:.1f} GiB more needed on the CPU"
    elif type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text:
        found = _CUDA_REQUEST.search(text)
        where = f"{found[1]} more needed on the GPU" if found else "on the GPU"
    elif isinstance(error, MemoryError):
        where = "in Python"
    else:
        return None
    return (
        f"out of memory ({where}): lower the sizes that set it, for training data.crop_size and "
        "train.batch_size, for evaluation eval.size, eval.batch_size and eval.scales (cosa predict: --size, "
        "--batch-size, --scales); a training run resumes with new eval.* values (--resume)"
    )
