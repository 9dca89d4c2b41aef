"""Who uses the activation buffer's one port in each cycle.

The activation buffer (``activation_buffer.py``) is single-ported: one read of a whole word or
one lane-masked write per cycle.  The engine's phases keep its users mostly apart -- the input
stream and the host while idle, the broadcast unit's reads while computing, the write-back's
writes after the broadcast unit is done, the output stream after the run -- and where two ask in
one cycle (the host and the input stream, say) a fixed priority decides, writes before reads:

* writes: the write-back (whole words, the shared requantizers' results), the input stream and
  the host (one lane each);
* reads: the broadcast unit (while computing), the output stream (while unloading), the host
  (otherwise).
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler.config import EngineConfig

__all__ = ["ActivationPorts", "buffer_signature", "lane_write_signature", "read_signature",
           "result_write_signature", "stream_write_signature"]


def _word(config: EngineConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(config.act_bits), config.pes)


def _addr_bits(config: EngineConfig) -> int:
    return ceil_log2(max(2, config.act_words))


def buffer_signature(config: EngineConfig) -> wiring.Signature:
    """The activation buffer's port, seen from its user (``ActivationBuffer``'s members)."""
    return wiring.Signature({
        "addr": Out(_addr_bits(config)),
        "w_en": Out(config.pes),
        "w_data": Out(_word(config)),
        "r_en": Out(1),
        "r_data": In(_word(config)),
    })


def read_signature(config: EngineConfig) -> wiring.Signature:
    """A reader of whole words: ``data`` is word ``addr``, ``activation_buffer.LATENCY``
    cycles after ``en``."""
    return wiring.Signature({
        "addr": Out(_addr_bits(config)),
        "en": Out(1),
        "data": In(_word(config)),
    })


def lane_write_signature(config: EngineConfig) -> wiring.Signature:
    """A write of one activation: ``value`` into lane ``lane`` of word ``addr`` when ``en``."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(_addr_bits(config)),
        "lane": Out(range(max(2, config.pes))),
        "value": Out(signed(config.act_bits)),
    })


def stream_write_signature(config: EngineConfig) -> wiring.Signature:
    """The input stream's writes: a lane write, and ``offered``: a value is on offer (its
    ``value`` is valid, whether or not it is taken)."""
    return wiring.Signature({**lane_write_signature(config).members, "offered": Out(1)})


def result_write_signature(config: EngineConfig) -> wiring.Signature:
    """The sequencer's ``result_write``: the requantizers' results go into lanes
    ``g * period + phase`` of word ``addr`` when ``en``; ``storing`` is a register, high while
    a layer's results are written."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(_addr_bits(config)),
        "phase": Out(range(max(2, config.writeback_period))),
        "storing": Out(1),
    })


class ActivationPorts(wiring.Component):
    """Arbitrates the activation buffer's port.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    buffer : Out(``buffer_signature``); to the activation buffer.
    result : In(``result_write_signature``); the write-back's writes.
    results : In; the shared requantizers' outputs, one per group of
        ``config.writeback_period`` lanes.
    stream : In(``stream_write_signature``); the input stream's writes.
    host_write : In(``lane_write_signature``); the host's writes.
    computing : In; the broadcast unit's reads are served.
    unloading : In; the output stream's reads are served (when not computing).
    broadcast, unload, host_read : In(``read_signature``); the broadcast unit's, the output
        stream's and the host's reads; each sees every word read.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        groups = config.pes // config.writeback_period
        super().__init__({
            "buffer": Out(buffer_signature(config)),
            "result": In(result_write_signature(config)),
            "results": In(data.ArrayLayout(signed(config.act_bits), groups)),
            "stream": In(stream_write_signature(config)),
            "host_write": In(lane_write_signature(config)),
            "computing": In(1),
            "unloading": In(1),
            "broadcast": In(read_signature(config)),
            "unload": In(read_signature(config)),
            "host_read": In(read_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes, period = config.pes, config.writeback_period
        buffer, result, stream, host = self.buffer, self.result, self.stream, self.host_write

        # Every lane of a group gets its requantizer's output; the lane mask picks one.
        result_lanes = Cat((result.phase == k % period) for k in range(pes))
        write_address = Signal.like(buffer.addr)
        single_value = Signal(signed(config.act_bits))
        # Whether a lane is written: the OR of the three requests, not of the lane enables
        # (each a function of all three; the address multiplexer waits on it).
        activation_write = Signal()
        m.d.comb += activation_write.eq(result.en | stream.en | host.en)
        with m.If(result.en):
            m.d.comb += [write_address.eq(result.addr), buffer.w_en.eq(result_lanes)]
        with m.Elif(stream.en):
            m.d.comb += [write_address.eq(stream.addr), buffer.w_en.eq(1 << stream.lane)]
        with m.Elif(host.en):
            m.d.comb += [write_address.eq(host.addr), buffer.w_en.eq(1 << host.lane)]
        # The single value written, outside the priority above: a result write does not use
        # it (the requantizers' outputs are chosen on `storing`), and the stream's value is
        # the one whenever it is offered (a host write then is refused or loses to it), so no
        # decision made far away (a result's arrival, the bus decode) waits in front of the
        # 256 bits of write data.
        m.d.comb += single_value.eq(Mux(stream.offered, stream.value, host.value))
        # Choose between a result and a single value once per requantizer, then fan out; on
        # a register (the word is 256 bits wide on the ECP5 build), not on the write enable.
        group_values = [Mux(result.storing, self.results[group], single_value)
                        for group in range(pes // period)]
        m.d.comb += buffer.w_data.eq(Cat(group_values[k // period] for k in range(pes)))

        read_address = Signal.like(buffer.addr)
        with m.If(self.computing):
            m.d.comb += [read_address.eq(self.broadcast.addr), buffer.r_en.eq(self.broadcast.en)]
        with m.Elif(self.unloading):
            m.d.comb += [read_address.eq(self.unload.addr), buffer.r_en.eq(self.unload.en)]
        with m.Else():
            m.d.comb += [read_address.eq(self.host_read.addr), buffer.r_en.eq(self.host_read.en)]
        m.d.comb += buffer.addr.eq(Mux(activation_write, write_address, read_address))
        for reader in (self.broadcast, self.unload, self.host_read):
            m.d.comb += reader.data.eq(buffer.r_data)
        return m
