"""The ``sparseforge`` command: one verb per pipeline stage, plus ``doctor``.

Every verb takes ``--json`` and then prints exactly one JSON object with its figures on stdout
(progress and tables go to stderr in that mode), so scripts and CI can read the numbers.

A user's error (``compiler.errors.UserError``: a bad file or value, a missing tool, a board that
does not answer) is caught here, once: ``error: ...`` on stderr, ``{"error": ...}`` under
``--json``, exit status 2.  Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import warnings

__all__ = ["main", "build_parser"]

# One module per verb in sparseforge/commands, in the order of the pipeline.
VERBS = ("compress", "import", "compile", "sim", "build", "flash", "run", "report", "demo", "sweep",
         "verify", "doctor")


class _Parser(argparse.ArgumentParser):
    """argparse's parser; a usage error under ``--json`` is also one JSON object on stdout."""
    json_errors = False

    def error(self, message):
        if _Parser.json_errors:
            print(json.dumps({"error": f"{self.prog}: {message}"}))
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    from sparseforge import __version__
    from sparseforge.boards.registry import boards

    from .commands.common import plain_text, tidy_parser

    parser = _Parser(
        prog="sparseforge",
        description="Compress a PyTorch network and run it on a verified sparse engine on an "
                    "open FPGA.")
    parser.add_argument("--version", action="version", version=f"sparseforge {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        try:
            module = importlib.import_module(f"sparseforge.commands.{verb}")
        except ModuleNotFoundError as error:
            if error.name != f"sparseforge.commands.{verb}":
                raise
            continue        # that stage is not built yet; it is not offered rather than faked
        module.register(verbs)
        sub = verbs.choices[verb]
        sub.description = sub.description or plain_text(module.__doc__ or "")
        tidy_parser(sub, sorted(boards()))
    return parser


def main(argv: list[str] | None = None) -> int:
    # PyTorch's vectorised CPU kernels (AVX2, AVX-512) round differently from one another, and
    # the compression's retraining amplifies that into a different model now and then (on the
    # digits default, one test image either way).  The command line runs the portable kernels,
    # so a model compresses to the same bits on every x86 machine; a caller who already set
    # ATEN_CPU_CAPABILITY keeps theirs.  (torch reads it once, at import: nothing here has
    # imported torch yet.)
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
    _Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from sparseforge.compiler.errors import UserError
    from sparseforge.hw.toolchain import ToolNotFoundError

    from .commands.common import begin, fail

    begin(args)
    previous = _terminate_by_exception()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args) or 0
    except (UserError, ToolNotFoundError) as error:
        _quiet_unused_elaboratables()
        return fail(str(error))
    except KeyboardInterrupt:
        _quiet_unused_elaboratables()
        print("interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        _quiet_unused_elaboratables()
        print("terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say, and nobody to say it to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _quiet_unused_elaboratables() -> None:
    """A verb stopped halfway leaves components it built and never used: Amaranth warns of
    each as it is collected (46 warnings with source paths after a Ctrl-C in compile), which
    would bury the one line that says what happened."""
    unused = sys.modules.get("amaranth._unused")
    if unused is not None:
        warnings.simplefilter("ignore", unused.UnusedMustUse)


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so that what it was writing is cleaned up."""


def _terminate_by_exception():
    """Turn SIGTERM (a job scheduler's or a timeout's stop) into :class:`_Terminated`, so the
    ``finally`` blocks that remove half-written outputs run and the tools a verb started are
    killed (``subprocess.run`` kills its child when interrupted); returns the handler it
    replaced, or None when it could not install one (not the main thread, or one set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def terminated(signum, frame):
        raise _Terminated

    return signal.signal(signal.SIGTERM, terminated)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings about the user's data or model (``UserWarning``'s ``InputWarning``) as
    ``warning: <message>`` lines, not with the file and line of the code that raised them;
    other warnings as Python shows them."""
    from sparseforge.compiler.errors import InputWarning

    if issubclass(category, InputWarning):
        print(f"warning: {message}", file=sys.stderr if file is None else file)
        return
    _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


if __name__ == "__main__":
    sys.exit(main())
