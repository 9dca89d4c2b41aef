"""The activation buffer: a layer's input, then its output, ``pes`` activations per word.

One access per cycle, a read of a whole word or a lane-masked write: the engine never needs
both at once (inputs and host accesses happen while it is idle, the broadcast unit reads during
compute, the write-back writes after it).  Being single-ported lets it live in the iCE40
UltraPlus's 256-kbit single-port RAMs, which the engine does not otherwise use, instead of in
four of its thirty block RAMs.

Elaborated for a part where ``compiler.resources.activations_in_spram`` says so (an iCE40UP
with ``pes * act_bits <= 64``), it is made of ``SB_SPRAM256KA`` primitives (16 bits each,
nibble write masks); anywhere else, of an ``amaranth.lib.memory`` memory.  Either way the
request (address, write lanes and data, read enable) is registered before it reaches the
memory, so that the SPRAMs at the die's corners are driven from
flip-flops (placed next to them) rather than from the engine's multiplexers: read data is valid
``LATENCY`` = 2 cycles after ``r_en``, and a write lands a cycle after it is asked for.
"""

from amaranth import Cat, ClockSignal, Instance, Module, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div
from sparseforge.compiler.resources import SPRAM_WIDTH, activations_in_spram

__all__ = ["ActivationBuffer", "LATENCY"]

LATENCY = 2                 # cycles from r_en to r_data


class ActivationBuffer(wiring.Component):
    """The single-ported activation memory, ``pes`` activations per word.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    addr : In; the word read or written.
    w_en : In(pes); lanes written this cycle (none: no write).
    w_data : In(word); the lanes' values.
    r_en : In; read ``addr`` (ignored in a write cycle).
    r_data : Out(word); the word read, ``LATENCY`` cycles after ``r_en``; held while nothing is
        read or written, undefined after a write (the SPRAM's behaviour; nothing in the engine
        reads and writes in one phase).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        word = data.ArrayLayout(signed(config.act_bits), config.pes)
        super().__init__({
            "addr": In(ceil_log2(max(2, config.act_words))),
            "w_en": In(config.pes),
            "w_data": In(word),
            "r_en": In(1),
            "r_data": Out(word),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        addr = Signal.like(self.addr)
        w_en = Signal.like(self.w_en)
        w_data = Signal.like(self.w_data)
        r_en = Signal()
        m.d.sync += [addr.eq(self.addr), w_en.eq(self.w_en), w_data.eq(self.w_data),
                     r_en.eq(self.r_en & (self.w_en == 0))]
        if activations_in_spram(config, getattr(platform, "device", "") or ""):
            self._spram(m, addr, w_en, w_data, r_en)
            return m
        m.submodules.storage = storage = memory.Memory(
            shape=data.ArrayLayout(signed(config.act_bits), config.pes),
            depth=config.act_words, init=[])
        write = storage.write_port(granularity=1)
        read = storage.read_port()
        m.d.comb += [
            write.addr.eq(addr), write.data.eq(w_data), write.en.eq(w_en),
            read.addr.eq(addr), read.en.eq(r_en),
            self.r_data.eq(read.data),
        ]
        return m

    def _spram(self, m, addr, w_en, w_data, r_en):
        config = self._config
        bits = Signal(config.pes * config.act_bits)
        out = Signal(len(bits))
        m.d.comb += bits.eq(w_data)
        nibbles_per_lane = config.act_bits // 4
        # Nibble write mask: every nibble of a written lane.
        mask = Cat(w_en[lane] for lane in range(config.pes)
                   for _ in range(nibbles_per_lane))
        writing = w_en != 0
        for block in range(ceil_div(len(bits), SPRAM_WIDTH)):
            low = block * SPRAM_WIDTH
            data_in = Signal(SPRAM_WIDTH)
            data_out = Signal(SPRAM_WIDTH)
            block_mask = Signal(4)
            m.d.comb += [data_in.eq(bits[low:low + SPRAM_WIDTH]),
                         block_mask.eq(mask[block * 4:block * 4 + 4])]
            m.submodules[f"spram{block}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=addr, i_DATAIN=data_in, i_MASKWREN=block_mask,
                i_WREN=writing, i_CHIPSELECT=writing | r_en,
                i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=data_out)
            m.d.comb += out[low:low + SPRAM_WIDTH].eq(data_out)
        m.d.comb += self.r_data.eq(out)
