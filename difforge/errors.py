"""The one exception type for user errors.

Anything raised as :class:`DifforgeError` is the user's to fix (a bad path, an unknown
preset, a tampered artifact): the CLI prints its message on one line and exits non-zero.
Any other exception is a bug in difforge and keeps its traceback.
"""

from __future__ import annotations


class DifforgeError(Exception):
    """A problem with the user's input, named in one line."""
