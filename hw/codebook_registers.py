"""The running layer's codebook: one register file, read by every PE.

EIE gives each PE's arithmetic unit its own lookup table for the layer's shared weights (Han et
al., ISCA 2016); on an FPGA the copies would cost more registers than a PE's whole datapath,
and the PEs only read it, so one file serves them all.  The sequencer loads it from the codebook
memory, one value per cycle, before each layer (``sequencer.py``).
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler.config import EngineConfig

__all__ = ["CodebookRegisters", "codebook_write_signature"]


def codebook_write_signature(config: EngineConfig) -> wiring.Signature:
    """A write of one codebook value (the sequencer's ``codebook_write``)."""
    return wiring.Signature({
        "en": Out(1),
        "index": Out(config.code_bits),
        "value": Out(signed(config.coef_bits)),
    })


class CodebookRegisters(wiring.Component):
    """The codebook register file.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    write : In(``codebook_write_signature``); the sequencer's loader.  A write lands two cycles
        later (it is registered first).
    values : Out; the ``config.codebook_size`` values, to every PE.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "write": In(codebook_write_signature(config)),
            "values": Out(data.ArrayLayout(signed(config.coef_bits), config.codebook_size)),
        })

    def elaborate(self, platform):
        m = Module()
        # The writes are registered, so the sequencer's loader drives one small register, not
        # the enables of a file spread among the PEs.  The last value lands a cycle after the
        # loader says loaded, many cycles before the layer's first product (PIPELINE_FILL).
        write_en = Signal()
        write_index = Signal.like(self.write.index)
        write_value = Signal.like(self.write.value)
        m.d.sync += [write_en.eq(self.write.en),
                     write_index.eq(self.write.index),
                     write_value.eq(self.write.value)]
        with m.If(write_en):
            m.d.sync += self.values[write_index].eq(write_value)
        return m
