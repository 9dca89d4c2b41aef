"""The public API's functions that join stages: each calls the stages in data-flow order.

``sf.compile`` is the compiler's :func:`~sparseforge.compiler.program.compile` followed by the
golden model's check of the image against the network it came from
(:func:`~sparseforge.sim.reference.golden.check_program`): the compiler verifies what it can
by itself (the image decodes to the network's codes), and the check that needs the golden
model runs here, above both, so that no stage imports one above it.  ``sf.reference`` and
``sf.simulate`` are the golden model's and the simulation's, and ``sf.build`` the board's,
refusing another stage's artifact (a compressed model, a path) with what to pass instead.
"""

from __future__ import annotations

import functools

from sparseforge.compiler import program as _program
from sparseforge.sim.reference import golden as _golden

__all__ = ["build", "compile", "reference", "simulate"]


def compile(model, pes: int | None = None, board: str | None = None, *,
            scan_lanes: int | None = None, fifo_depth: int | None = None,
            headroom: float | None = None, writeback_lanes: int | None = None,
            skip_zeros: bool = False, config=None,
            verify: bool = True, fit_check: bool = True,
            balance: bool = True, remove_dead: bool = True) -> _program.Program:
    """Lower a compressed model to a program for ``pes`` PEs (default 8; with a ``board``
    that does not hold 8 by the fit check, the most that fit; see
    :func:`sparseforge.compiler.program.compile` for every option); with ``verify`` (the
    default) the image is decoded and checked against the network, and the golden model run
    on a seeded random batch against ``QuantizedNetwork.forward``.  ``fit_check=False``
    keeps an engine the board's fit estimate would refuse (nextpnr then decides);
    ``balance=False`` keeps every layer's row order (no ``compiler.balance`` pass) and
    ``remove_dead=False`` every hidden unit (no ``compiler.dead_units`` pass)."""
    import os

    if isinstance(model, (str, os.PathLike)):
        raise TypeError(f"sf.compile takes a compressed model, not a path: "
                        f"sf.load_compressed({str(model)!r}) reads an .sfm file (a float "
                        f"model is compressed first, sf.compress)")
    program = _program.compile(model, pes, board, scan_lanes=scan_lanes, fifo_depth=fifo_depth,
                               headroom=headroom, writeback_lanes=writeback_lanes,
                               skip_zeros=skip_zeros, config=config, verify=verify,
                               fit_check=fit_check, balance=balance,
                               remove_dead=remove_dead)
    if verify:
        _golden.check_program(program)
    return program


def build(program, board: str | None = None, **options):
    """Build ``program``'s bitstream for ``board``: ``sparseforge.boards.build.build`` (its
    docstring gives the options), ``program`` checked first (a compressed model or a path is
    refused with what to pass)."""
    from sparseforge.boards import build as _build

    return _build.build(_program_of(program, "sf.build"), board, **options)


def _program_of(program, verb: str):
    """``program``, refused with what to pass instead when it is a stage's artifact other than
    a Program (a compressed model, a network) or the path of one (``verb`` names the call)."""
    import os

    from sparseforge.compiler.compress.model import CompressedModel
    from sparseforge.compiler.ir import QuantizedNetwork

    if isinstance(program, (CompressedModel, QuantizedNetwork)):
        raise TypeError(f"{verb} takes a Program, from sf.compile(model, pes=...) or "
                        f"sf.load_program(folder), not a {type(program).__name__}: compile it "
                        f"first" + (" (its predict(x) gives the same integer outputs without "
                                    "compiling)" if isinstance(program, CompressedModel)
                                    else ""))
    if isinstance(program, (str, os.PathLike)):
        raise TypeError(f"{verb} takes a Program, not a path: sf.load_program({str(program)!r}) "
                        f"reads a program folder")
    return program


@functools.wraps(_golden.reference)
def reference(program, X, *, integer: bool = False):
    X, _ = _inputs_of(X, "sf.reference")
    return _golden.reference(_program_of(program, "sf.reference"), X, integer=integer)


def simulate(program, X, **options):
    """Run ``X`` on the generated engine under cocotb: ``sparseforge.sim.simulate.simulate``
    (its docstring gives the options), ``program`` checked first.  ``X`` may be a PyTorch
    ``Dataset`` or ``DataLoader`` of ``(x, label)`` samples, whose labels give the accuracy
    unless ``labels=`` is given."""
    from sparseforge.sim import simulate as _simulate

    X, labels = _inputs_of(X, "sf.simulate")
    if labels is not None and options.get("labels") is None:
        options["labels"] = labels
    return _simulate.simulate(_program_of(program, "sf.simulate"), X, **options)


def _inputs_of(X, verb: str):
    """``X`` as inputs and, for a PyTorch ``Dataset`` or ``DataLoader`` of ``(x, label)``
    samples, its labels (collected as ``sf.compress`` collects its data); else ``(X, None)``."""
    from sparseforge.compiler.compress.training import as_pair

    pair = as_pair(X, f"{verb}'s inputs")
    return pair if pair is not X else (X, None)
