"""What every verb shares: the ``--json`` convention and clear failures.

With ``--json`` a verb prints exactly one JSON object on stdout and everything meant for a person
(tables, progress) goes to stderr; without it, tables go to stdout.  An error is ``error: ...``
on stderr and, under ``--json``, ``{"error": "..."}`` on stdout unless the verb already printed
its object (``cli.main`` tells :func:`begin` which verb runs).

Output that is not a terminal gets no colour codes and is not wrapped at 80 columns: a log or a
pipe keeps each line whole.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

__all__ = ["HelpFormatter", "add_json_flag", "begin", "check_labels", "check_targets",
           "console_for",
           "emit_json", "fail", "plain_text", "positive_int", "stderr_console", "tidy_parser"]

# The verb being run, and whether it has printed its JSON object (one per run).
_state = {"json": False, "emitted": False}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Wide enough for a table or a path on one line when nobody's terminal decides.
_PIPE_WIDTH = 200


def begin(args) -> None:
    """A verb starts: later errors know whether it runs under ``--json``."""
    _state.update(json=bool(getattr(args, "json", False)), emitted=False)


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with the figures on stdout")


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=_PIPE_WIDTH, no_color=True, soft_wrap=True)


def console_for(args) -> Console:
    return _console(bool(getattr(args, "json", False)))


def stderr_console() -> Console:
    return _console(True)


def emit_json(args, payload: dict) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=_plain))
        _state["emitted"] = True


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--count 0`` or ``-3`` is a mistake,
    not "all" or "all but three")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def seeds_option(args) -> dict:
    """``sf.build``'s ``seeds`` when ``--seeds`` was given; else nothing, so that the command
    line builds with the library's default (``boards.build.DEFAULT_SEEDS``)."""
    return {} if args.seeds is None else {"seeds": args.seeds}


def load_npz(path, what: str = "data") -> dict:
    """The arrays of an ``.npz`` archive, without pickle; a file of another kind (an
    ``.npy`` array, a text file) is refused with a message that says which was expected."""
    import zipfile

    import numpy as np

    from sparseforge.compiler.errors import InputError, no_such_file

    path = Path(path)
    if not path.is_file():
        raise InputError(no_such_file(path, what))
    if not zipfile.is_zipfile(path):
        kind = ("an .npy array" if _is_npy(path) else
                f"text (a CSV?): read it, e.g. table = np.loadtxt({str(path)!r}, "
                f"delimiter=','), and save the arrays with np.savez('data.npz', "
                f"x_train=table[:, :-1], y_train=table[:, -1].astype(int))"
                if _is_text(path) else "not an archive")
        raise InputError(f"{path}: the {what} must be an .npz archive (np.savez) of named "
                         f"arrays; this file is {kind}")
    arrays, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                arrays[key] = data[key]
            return arrays
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        if key is not None and "Object arrays" in str(error):
            raise InputError(f"{path}: array {key!r} holds Python objects (dtype object), "
                             f"which would need pickle, and sparseforge never unpickles user "
                             f"files: save it as numbers (np.asarray({key}, dtype="
                             f"{'np.int64' if key.startswith('y') else 'np.float32'}))") \
                from error
        raise InputError(f"{path}: not a readable .npz without pickle"
                         f"{f' (array {key!r})' if key is not None else ''}: {error}") from error


def lowercase_keys(arrays: dict) -> dict:
    """The arrays with their names in lower case (``X_train``, ``Y_train`` as scikit-learn's
    habit writes them are ``x_train``, ``y_train``), unless two names would become one."""
    lower = {key.lower() for key in arrays}
    if len(lower) != len(arrays):
        return arrays
    return {key.lower(): value for key, value in arrays.items()}


def load_npy(path, what: str = "inputs"):
    """One array from an ``.npy`` file, without pickle; an ``.npz`` archive or a file of
    another kind is refused with a message that says which was expected."""
    import zipfile

    import numpy as np

    from sparseforge.compiler.errors import InputError, no_such_file

    path = Path(path)
    if not path.is_file():
        raise InputError(no_such_file(path, what))
    if not _is_npy(path):
        kind = ("an .npz archive (give one of its arrays, saved with np.save)"
                if zipfile.is_zipfile(path) else "not an .npy array")
        raise InputError(f"{path}: the {what} must be an .npy array (np.save); this file is "
                         f"{kind}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        if "Object arrays" in str(error):
            raise InputError(f"{path}: the {what} hold Python objects (dtype object), which "
                             f"would need pickle, and sparseforge never unpickles user files: "
                             f"save them as numbers (np.asarray(values, dtype="
                             f"{'np.int64' if what == 'labels' else 'np.float32'}))") from error
        raise InputError(f"{path}: not a readable .npy without pickle: {error}") from error


def _is_text(path: Path) -> bool:
    """Whether ``path`` starts as UTF-8 text (a CSV, a JSON file), judged by its first 4 KiB."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:       # not merely a character cut at the 4 KiB
            return False
    return bool(head) and b"\0" not in head


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(6) == b"\x93NUMPY"


def check_labels(labels, count: int | None, classes: int, where: str):
    """Labels as a vector of integer classes ``0 .. classes-1``, ``count`` of them when given
    (one for each input given: a ``--count`` cuts both afterwards).  A single column, shape
    ``(n, 1)``, is taken as the vector it holds, as ``compress --data`` takes one."""
    import numpy as np

    from sparseforge.compiler.errors import InputError

    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)          # whole numbers stored as floats (a CSV's)
    if labels.dtype.kind not in "iu":
        raise InputError(f"{where}: labels must be integers (class numbers), not "
                         f"{labels.dtype} values (the program is a classifier's; a "
                         f"regression model is compressed with --task regression)")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(f"{where}: labels must be a vector (or a single column), one class "
                         f"per input, not of shape {labels.shape}")
    if count is not None and len(labels) != count:
        raise InputError(f"{where}: {len(labels)} labels for {count} inputs")
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        raise InputError(f"{where}: label {int(labels[outside][0])} is not a class of the "
                         f"model's {classes} outputs (0 to {classes - 1})")
    return labels.astype(np.int64)


def check_targets(targets, count: int, outputs: int, where: str):
    """A regression program's targets as ``count`` x ``outputs`` values (``--labels`` of a
    regression: :func:`check_labels`' counterpart), one row for each input given."""
    import numpy as np

    from sparseforge.compiler.errors import InputError
    from sparseforge.sim.simulate import checked_targets

    try:
        return checked_targets(np.asarray(targets), count, outputs)
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None


def fail(message: str, status: int = 2) -> int:
    """Report an error (see the module docstring); returns ``status`` for the verb to return."""
    message = str(message)
    console = stderr_console()
    if not sys.stderr.isatty():
        message = _ANSI.sub("", message)
    # Not markup: a message may hold brackets ("shape [64, 10]") that rich would eat.
    console.print(Text("error: ", style="bold red") + Text(message))
    if _state["json"] and not _state["emitted"]:
        print(json.dumps({"error": _ANSI.sub("", message)}))
        _state["emitted"] = True
    return status


def _plain(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")




# ---- --help ----------------------------------------------------------------------------------

class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs kept), and every option's static default said once,
    by argparse, from the default itself (``%(default)s``), never repeated by hand."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


_RST = ((re.compile(r":\w+:`~?([^`]+)`"), r"\1"), (re.compile(r"``([^`]+)``"), r"`\1`"))
# A hand-written "(default 8)" / "(default: 8)" beside a static default argparse now states.
_HAND_DEFAULT = re.compile(r"\s*\(default:? [^()]*(\([^()]*\)[^()]*)*\)")


def plain_text(text: str) -> str:
    """A docstring without reStructuredText markup, for a terminal."""
    for pattern, replacement in _RST:
        text = pattern.sub(replacement, text)
    return text.strip()


def tidy_parser(parser: argparse.ArgumentParser, boards: list[str]) -> None:
    """One verb's ``--help``: plain-text description (its one-line help when it has none),
    defaults said by argparse, and the boards listed where an option takes one."""
    parser.formatter_class = HelpFormatter
    parser.description = plain_text(parser.description or "")
    for action in parser._actions:
        static = action.default is not None and not isinstance(action.default, bool)
        if action.help is None and static and action.option_strings:
            action.help = "(default: %(default)s)"      # said all the same
            continue
        if action.help is None or action.help is argparse.SUPPRESS:
            continue
        if static and action.option_strings:
            action.help = _HAND_DEFAULT.sub("", action.help)
        if action.dest == "board" and action.option_strings and "one of" not in action.help:
            action.help += f"; one of: {', '.join(boards)}"
            action.metavar = action.metavar or "BOARD"


def output_folder(path) -> Path:
    """``path`` made as the folder a verb writes into, or an :class:`InputError` that names
    why it cannot be (a file there, a file on the way, no permission)."""
    from sparseforge.compiler.errors import InputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder: give a folder for the outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot make the output folder {path}: "
                         f"{error.strerror or error}") from None
    return path


def check_writable(output: str | Path) -> None:
    """Refuse, before any training, an output that cannot be written: a folder (an existing
    one, or a path ending in a separator, which ``Path`` would drop), or a path whose first
    existing ancestor is a file or a folder this user cannot write."""
    text = os.fspath(output)
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise ValueError(f"{text}: names a folder; give the .sfm file to write, e.g. "
                         f"{Path(text) / 'model.sfm'}")
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"cannot write {output}: it is a folder; give the .sfm file to "
                         f"write, e.g. {output / 'model.sfm'}")
    ancestor = output.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {output}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK) or (output.exists()
                                                      and not os.access(output, os.W_OK)):
        raise ValueError(f"cannot write {output}: permission denied ({ancestor})")
