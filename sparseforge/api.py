"""The public API's functions that join stages: each calls the stages in data-flow order.

``sf.compile`` is the compiler's :func:`~sparseforge.compiler.program.compile` followed by the
golden model's check of the image against the network it came from
(:func:`~sparseforge.sim.reference.golden.check_program`): the compiler verifies what it can
by itself (the image decodes to the network's codes), and the check that needs the golden
model runs here, above both, so that no stage imports one above it.
"""

from __future__ import annotations

from sparseforge.compiler import program as _program
from sparseforge.sim.reference import golden as _golden

__all__ = ["compile"]


def compile(model, pes: int | None = None, board: str | None = None, *,
            scan_lanes: int | None = None, fifo_depth: int | None = None,
            headroom: float | None = None, writeback_lanes: int | None = None,
            skip_zeros: bool = False, config=None,
            verify: bool = True, fit_check: bool = True,
            balance: bool = True, remove_dead: bool = True) -> _program.Program:
    """Lower a compressed model to a program for ``pes`` PEs (see
    :func:`sparseforge.compiler.program.compile` for every option); with ``verify`` (the
    default) the image is decoded and checked against the network, and the golden model run
    on a seeded random batch against ``QuantizedNetwork.forward``.  ``fit_check=False``
    keeps an engine the board's fit estimate would refuse (nextpnr then decides);
    ``balance=False`` keeps every layer's row order (no ``compiler.balance`` pass) and
    ``remove_dead=False`` every hidden unit (no ``compiler.dead_units`` pass)."""
    program = _program.compile(model, pes, board, scan_lanes=scan_lanes, fifo_depth=fifo_depth,
                               headroom=headroom, writeback_lanes=writeback_lanes,
                               skip_zeros=skip_zeros, config=config, verify=verify,
                               fit_check=fit_check, balance=balance,
                               remove_dead=remove_dead)
    if verify:
        _golden.check_program(program)
    return program
