"""User-facing errors.

A :class:`CosaError` is a problem with something the user gave us (a file, a config key, a
checkpoint). The command line prints its message as one line, without a traceback; anything
else that escapes is a bug and keeps its traceback.
"""


class CosaError(Exception):
    """An error caused by user input; the message names the file or key and what is wrong."""
