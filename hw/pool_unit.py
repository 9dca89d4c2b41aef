"""The pooling registers (conv mode): max pooling in the write-back path, in one pass.

A convolution with max pooling is walked window by window (``position_walker.py``): every
position's accumulators are written back through the requantizers as usual, and each result
meets, here, the largest result of its row and PE so far in the window.  The window's first
position starts the maximum over; its last writes the maximum into the output map (the
sequencer enables the activation buffer's write only then).  Max of the requantized outputs is
what the network computes (requantization is monotone, ReLU commutes with the max:
docs/numerics.md).  Each requantizer keeps ``max_rows * period`` values, one per result of a
position in the order the write-back gives them; without pooling every position is its own
window and the values pass through.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler.config import EngineConfig

__all__ = ["PoolUnit"]


class PoolUnit(wiring.Component):
    """The running maxima of a pooling window, one register file per requantizer.

    Parameters
    ----------
    config : EngineConfig (with ``conv``)

    Members
    -------
    results : In; the requantizers' outputs (one per group of ``period`` PEs).
    valid : In; ``results`` hold a result this cycle.
    index : In; the result's place in the position's write-back (0, 1, ...).
    first : In; the position opens its window: its results start the maxima.
    pooled : Out; the maxima including this cycle's results (what the buffer is written).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        groups = config.pes // config.writeback_period
        values = data.ArrayLayout(signed(config.act_bits), groups)
        super().__init__({
            "results": In(values),
            "valid": In(1),
            "index": In(range(max(2, config.max_rows * config.writeback_period))),
            "first": In(1),
            "pooled": Out(values),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        depth = config.pooling_depth
        for group in range(config.pes // config.writeback_period):
            # Small (a few values): registers or LUT RAM, read in the cycle its index is shown.
            m.submodules[f"maxima{group}"] = maxima = memory.Memory(
                shape=signed(config.act_bits), depth=depth, init=[])
            read = maxima.read_port(domain="comb")
            write = maxima.write_port()
            new = self.results[group]
            best = Signal(signed(config.act_bits), name=f"best{group}")
            m.d.comb += [
                read.addr.eq(self.index),
                best.eq(Mux(self.first | (new > read.data), new, read.data)),
                write.addr.eq(self.index), write.data.eq(best), write.en.eq(self.valid),
                self.pooled[group].eq(best),
            ]
        return m
