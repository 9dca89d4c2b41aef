"""The one base of the errors a user can cause and fix: a bad file, option or value, a model
that does not fit, a missing tool, a board that does not answer.

It sits at the bottom of the layers so that every stage can raise it; the command line
(``sparseforge.cli.main``) catches it once and prints ``error: <message>`` (or, under
``--json``, ``{"error": "<message>"}``) with exit status 2.  Anything else that escapes a verb
is a bug and keeps its traceback.  Subclasses keep the built-in base they had as well
(``ProgramError`` is still a ``ValueError``), so callers that catch those go on working.
"""

from __future__ import annotations

__all__ = ["UserError", "InputError", "InputWarning"]


class UserError(Exception):
    """An error the user can fix; the message names the thing and the value."""


class InputError(UserError, ValueError):
    """A bad value in something the user gave: an option, an input array, a file's field."""


class InputWarning(UserWarning):
    """Something in what the user gave that works but is likely not what they meant (the
    command line prints it as ``warning: <message>``)."""


class SparsityLowered(InputWarning):
    """The default sparsity lowered itself where it cost the model too much (``sparseforge
    compress`` says so in its summary instead)."""


def no_such_file(path, what: str) -> str:
    """The message for a ``what`` file that is not there: a folder in its place is named as
    one (``no such file`` would send the user looking for a file that is not missing)."""
    from pathlib import Path

    if Path(path).is_dir():
        return f"{path}: is a folder, not a {what} file"
    return f"{path}: no such {what} file"
