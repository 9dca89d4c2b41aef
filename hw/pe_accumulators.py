"""A PE's accumulator file: one accumulator per row the PE owns.

EIE (Han et al., ISCA 2016, section III-C, "arithmetic unit") accumulates each product into
the destination activation register of its row, and bypasses the adder's output to its input
when two products in a row go to the same accumulator.  Here the read port is transparent to
the write port: a product for row ``r`` that follows one for the same row in the next cycle
sees the freshly written sum.  That is EIE's bypass, done by the memory's transparency logic.

Optionally (``config.acc_memory_bits``) the accumulators' high bits live in registers, so a
24-bit accumulator file fits one 16-bit-wide iCE40 block RAM.
"""

from amaranth import Array, Cat, Module, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler.config import EngineConfig

from . import ram

__all__ = ["AccumulatorFile"]


class AccumulatorFile(wiring.Component):
    """The PE's accumulators: one synchronous read and one write per cycle, the read transparent
    to the write (a read of the row being written returns the new sum: EIE's bypass); with
    ``read.en`` low the read data holds.

    The low ``acc_memory_bits`` live in a memory (block RAM); the rest, if any, in registers
    with the same timing, so the file costs one 16-bit block RAM on an iCE40.

    Members
    -------
    read : In; ``addr`` is read at a clock edge when ``en`` is high, and ``data`` holds that
        row (``signed(config.acc_bits)``) until the next read.
    write : In; ``data`` is written to row ``addr`` at a clock edge when ``en`` is high.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        address = ceil_log2(max(2, config.max_rows))
        super().__init__({
            "read": In(wiring.Signature({
                "addr": Out(address), "en": Out(1), "data": In(signed(config.acc_bits))})),
            "write": In(wiring.Signature({
                "addr": Out(address), "data": Out(signed(config.acc_bits)), "en": Out(1)})),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        low_bits = config.acc_memory_bits or config.acc_bits
        high_bits = config.acc_bits - low_bits
        # On an iCE40 a small model's few rows would go to flip-flops (Yosys's rule for small
        # memories): a block RAM is what every PE of the fit check's calibration has, and
        # the UP5K's logic is the scarcer.
        small_part = ram.on_ice40(platform)
        m.submodules.memory = storage = memory.Memory(
            shape=low_bits, depth=config.max_rows, init=[],
            attrs={"ram_style": "block"} if small_part else {})
        write = storage.write_port()
        read = storage.read_port(transparent_for=(write,))
        m.d.comb += [
            write.addr.eq(self.write.addr), write.data.eq(self.write.data[:low_bits]),
            write.en.eq(self.write.en), read.addr.eq(self.read.addr), read.en.eq(self.read.en),
        ]
        if not high_bits:
            m.d.comb += self.read.data.eq(read.data)
            return m
        high = Array(Signal(high_bits, name=f"high_{row}") for row in range(config.max_rows))
        high_read = Signal(high_bits)
        with m.If(self.write.en):
            m.d.sync += high[self.write.addr].eq(self.write.data[low_bits:])
        with m.If(self.read.en & self.write.en & (self.write.addr == self.read.addr)):
            m.d.sync += high_read.eq(self.write.data[low_bits:])
        with m.Elif(self.read.en):
            m.d.sync += high_read.eq(high[self.read.addr])
        m.d.comb += self.read.data.eq(Cat(read.data, high_read))
        return m
