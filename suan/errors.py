"""Errors a user can fix: the CLI prints them as one line (no traceback unless ``--debug`` or
``SUAN_DEBUG=1``) and exits non-zero. Anything else is a bug and keeps its traceback."""
from __future__ import annotations


class UserError(Exception):
    """A problem with an argument, a file or the data; the message names it and says what to do."""


class Interrupted(Exception):
    """The run was stopped by a signal after saving its state; the message says where."""

    exit_code = 130
