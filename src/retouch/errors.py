"""The one exception type that retouch raises for bad input."""

from __future__ import annotations


class RetouchError(Exception):
    """A problem the user can fix: the message says what was wrong and what to do.

    The CLI prints the message to stderr and exits with code 2, without a traceback.
    """
