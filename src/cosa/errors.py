"""User-facing errors.

A :class:`CosaError` is a problem with something the user gave us (a file, a config key, a
checkpoint). The command line prints its message as one line, without a traceback; anything
else that escapes is a bug and keeps its traceback.
"""


class CosaError(Exception):
    """An error caused by user input; the message names the file or key and what is wrong."""


def user_message(error: CosaError) -> str:
    """The one-line message of ``error``, also when a data-loader worker wrapped it.

    PyTorch re-raises a worker's exception with the worker's traceback folded into the message;
    the user needs only its last line.
    """
    message = str(error)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1]
        message = message.split(f"{CosaError.__module__}.{CosaError.__name__}: ", 1)[-1]
    return message
