"""SLIP (RFC 1055) escaping of the link's outgoing frames (docs/protocol.md, "Frames").

Inside a frame END (0xC0) goes out as ESC ESC_END and ESC (0xDB) as ESC ESC_ESC; the frame's
own END delimiters go out as they are.  The receiving side's unescaping is part of the frame
receiver (``frame_receiver.py``), where it shares the decisions on each arriving byte.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import protocol

__all__ = ["SlipEncoder"]


class SlipEncoder(wiring.Component):
    """Escapes END and ESC in a stream of bytes; bytes marked ``raw`` (the frame delimiters)
    pass unescaped.

    Members
    -------
    i : In(stream of ``byte`` and ``raw``); an escaped byte is taken with its first wire byte.
    o : Out(stream of bytes), the wire.
    """
    i: In(stream.Signature(data.StructLayout({"byte": 8, "raw": 1})))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        pending = Signal()
        second = Signal(8)
        byte = self.i.payload.byte
        special = ~self.i.payload.raw & ((byte == protocol.END) | (byte == protocol.ESC))
        with m.If(pending):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(second)]
            with m.If(self.o.ready):
                m.d.sync += pending.eq(0)
        with m.Else():
            m.d.comb += [
                self.o.valid.eq(self.i.valid),
                self.o.payload.eq(Mux(special, protocol.ESC, byte)),
                self.i.ready.eq(self.o.ready),
            ]
            with m.If(self.i.valid & self.o.ready & special):
                m.d.sync += [pending.eq(1),
                             second.eq(Mux(byte == protocol.END, protocol.ESC_END,
                                           protocol.ESC_ESC))]
        return m
