"""The input stream: a layer's input activations, in order, into the activation buffer.

Activation ``i`` goes into lane ``i mod pes`` of word ``i // pes`` (``isa.activation_index``),
one per transfer, while the engine is idle; the transfer with ``last`` asks for the run to start
and sends the next input back to word 0.  The transfers since the last run are counted for the
host (``bus.Register.INPUT_COUNT``).
"""

from amaranth import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .activation_ports import stream_write_signature

__all__ = ["InputStream"]


class InputStream(wiring.Component):
    """Takes the input stream into the activation buffer.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    input : In(stream of ``isa.stream_layout``); activations in order; ``last`` on the final one.
    busy : In; the engine is busy: nothing is taken.
    write : Out(``activation_ports.stream_write_signature``); the activation taken, into its
        word and lane.
    start : Out; the transfer with ``last`` was taken this cycle.
    count : Out; transfers since the last ``last`` (0 after it).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "input": In(stream.Signature(isa.stream_layout(config))),
            "busy": In(1),
            "write": Out(stream_write_signature(config)),
            "start": Out(1),
            "count": Out(range(config.max_features + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        pes = self._config.pes
        write, payload = self.write, self.input.payload
        m.d.comb += [
            self.input.ready.eq(~self.busy),
            write.en.eq(self.input.valid & self.input.ready),
            write.offered.eq(self.input.valid),
            write.value.eq(payload.value),
            self.start.eq(write.en & payload.last),
        ]
        with m.If(write.en):
            with m.If(payload.last):
                m.d.sync += [write.addr.eq(0), write.lane.eq(0)]
            with m.Elif(write.lane == pes - 1):
                m.d.sync += [write.addr.eq(write.addr + 1), write.lane.eq(0)]
            with m.Else():
                m.d.sync += write.lane.eq(write.lane + 1)
            m.d.sync += self.count.eq(Mux(payload.last, 0, self.count + 1))
        return m
