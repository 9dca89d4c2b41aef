"""The output stream: the last layer's activations after a run, in order.

When the sequencer says the run is done, the stream reads the activation buffer word by word
(each read ``activation_buffer.LATENCY`` = 2 cycles) and offers its lanes one per transfer, with
``last`` on the layer's ``out_features``-th; the engine stays busy (``unloading``) until that one
is taken.
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .activation_ports import read_signature

__all__ = ["OutputStream"]


class OutputStream(wiring.Component):
    """Streams the last layer's outputs out of the activation buffer.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    output : Out(stream of ``isa.stream_layout``); the activations in order.
    run_done : In; the sequencer's pulse at the end of a run: start unloading.
    out_features : In; the last layer's output count (held until ``unloading`` falls).
    base : In (conv engines only); the word of the last layer's first output (its output
        map's, ``geometry.out_base``), held likewise.
    unloading : Out; the outputs of the last run are not all taken yet.
    read : Out(``activation_ports.read_signature``); the activation buffer's word on show,
        read while ``unloading``.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "output": Out(stream.Signature(isa.stream_layout(config))),
            "run_done": In(1),
            "out_features": In(config.feature_bits),
            "unloading": Out(1),
            "read": Out(read_signature(config)),
            **({"base": In(ceil_log2(max(2, config.act_words)))} if config.conv else {}),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes = config.pes
        output, unloading = self.output, self.unloading
        output_word = self.read.addr
        showing = Signal()
        output_read = Signal()          # the read of output_word was asked for last cycle
        output_count = Signal(range(config.max_features + 1))
        output_lane = Signal(range(max(2, pes)))
        m.d.comb += self.read.en.eq(~showing & ~output_read)
        m.d.sync += output_read.eq(unloading & ~showing & ~output_read & ~self.run_done)
        with m.If(self.run_done):
            m.d.sync += [unloading.eq(1), showing.eq(0), output_count.eq(0),
                         output_word.eq(self.base if config.conv else 0), output_lane.eq(0)]
        with m.Elif(output_read):
            m.d.sync += showing.eq(1)      # the word lands (activation_buffer.LATENCY = 2)
        m.d.comb += [
            output.valid.eq(showing),
            output.payload.value.eq(self.read.data[output_lane]),
            output.payload.last.eq(output_count + 1 == self.out_features),
        ]
        with m.If(output.valid & output.ready):
            m.d.sync += [showing.eq(0), output_count.eq(output_count + 1)]
            with m.If(output.payload.last):
                m.d.sync += unloading.eq(0)
            with m.Elif(output_lane == pes - 1):
                m.d.sync += [output_lane.eq(0), output_word.eq(output_word + 1)]
            with m.Else():
                m.d.sync += output_lane.eq(output_lane + 1)
        return m
