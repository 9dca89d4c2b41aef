"""A PE's readout at write-back: each row's accumulator and bias, for a shared requantizer.

EIE (Han et al., ISCA 2016, section III-C) applies ReLU as it writes a PE's results to the
destination activation registers.  Here the requantizer (``requantize.py``: bias, rescale,
saturate, ReLU) is shared by ``config.writeback_period`` PEs (``engine.py``), so each row's
accumulator and bias stay on the readout for that many cycles while the group's PEs take turns.
The write-back schedule (``writeback.py``) says which row and when; the bias comes from the
parameter memory (``pe_memories.py``), whose read port otherwise reads the front end's column
words, and the accumulator from the accumulator file (``pe_mac.py``).
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler.config import EngineConfig

from .link_registers import link_domain
from .pe_memories import parameter_read_signature
from .writeback import schedule_signature

__all__ = ["Readout", "readout_layout"]


def readout_layout(config: EngineConfig) -> data.StructLayout:
    """What a PE hands its requantizer at write-back."""
    return data.StructLayout({"acc": signed(config.acc_bits), "bias": signed(config.bias_bits)})


class Readout(wiring.Component):
    """Reads each row's bias as the schedule says, and presents it with the row's accumulator.

    With ``config.link_registers`` the readout comes a cycle later, from registers beside the
    memories: an ECP5 block RAM's output arrives 5.8 ns into the cycle, too late to cross to a
    requantizer shared by PEs elsewhere on the die.

    Members
    -------
    writeback : In(``writeback.schedule_signature``).
    column_read : In(``pe_memories.parameter_read_signature``); the front end's column word
        reads, which the parameter memory serves while no write-back is active.
    parameter_read : Out(``pe_memories.parameter_read_signature``); the parameter memory's port.
    acc : In(``signed(config.acc_bits)``); the accumulator of the row read out.
    readout : Out(stream of ``readout_layout``), always ready; each row's accumulator and bias,
        valid while the schedule is ``showing`` (with ``config.link_registers``: a cycle
        later).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "writeback": In(schedule_signature(config)),
            "column_read": In(parameter_read_signature(config)),
            "parameter_read": Out(parameter_read_signature(config)),
            "acc": In(signed(config.acc_bits)),
            "readout": Out(stream.Signature(readout_layout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        writeback = self.writeback
        m.d.comb += [
            self.parameter_read.addr.eq(Mux(writeback.active, writeback.bias_address,
                                            self.column_read.addr)),
            # The port holds its word unless a column is issued or a bias read.
            self.parameter_read.en.eq(self.column_read.en | writeback.read),
            self.column_read.data.eq(self.parameter_read.data),
        ]
        # The readout is the two memories' outputs, held (their ports read nothing else) until
        # the next row's reads.
        readout_valid = Signal()
        readout_payload = Signal(readout_layout(config), reset_less=True)
        m.d[link_domain(config)] += [
            readout_valid.eq(writeback.showing),
            readout_payload.acc.eq(self.acc),
            readout_payload.bias.eq(self.parameter_read.data[:config.bias_bits]),
        ]
        m.d.comb += [self.readout.valid.eq(readout_valid),
                     self.readout.payload.eq(readout_payload)]
        return m
