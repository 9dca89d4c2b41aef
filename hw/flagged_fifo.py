"""A synchronous FIFO whose ``r_rdy`` and ``w_rdy`` are registers.

``amaranth.lib.fifo.SyncFIFO`` keeps its level in a register and works out ``r_rdy`` and
``w_rdy`` from it (``level != 0``, ``level != depth``).  A reader whose read decision is logic
on ``r_rdy`` (a PE's front end takes the queue's head when it is ready and its last lane
issues) then has the compare in front of that logic and, through the read, in front of the
level again: on the ECP5-85F engine that loop was the critical path.

Here both flags are registers kept with the level, updated from the same write and read, so
the read decision starts at a flip-flop.  The cost is two flip-flops.  The timing is
``SyncFIFO``'s, cycle for cycle: a word written is at the output the next cycle, and the head
is the memory's asynchronous read (LUT RAM on an ECP5, flip-flops on an iCE40).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FlaggedFIFO"]


class FlaggedFIFO(wiring.Component):
    """A FIFO of ``depth`` words of ``width`` bits, its flags in registers.

    Parameters
    ----------
    width : int
        Bits of a word.
    depth : int
        Words it holds (at least 1).

    Attributes
    ----------
    w_data : Signal(width), in
        The word to write.
    w_en : Signal(), in
        Write ``w_data`` at the next clock edge, if ``w_rdy``.
    w_rdy : Signal(), out
        Fewer than ``depth`` words are held (a register).
    r_data : Signal(width), out
        The head, while ``r_rdy``.
    r_rdy : Signal(), out
        At least one word is held (a register).
    r_en : Signal(), in
        Read the head at the next clock edge, if ``r_rdy``.
    level : Signal(range(depth + 1)), out
        Words held (a register).
    """

    def __init__(self, *, width: int, depth: int):
        if depth < 1:
            self._MustUse__silence = True
            raise ValueError(f"FlaggedFIFO depth must be at least 1, not {depth}")
        self.width = width
        self.depth = depth
        super().__init__({
            "w_data": In(width),
            "w_en": In(1),
            "w_rdy": Out(1, init=1),
            "r_data": Out(width),
            "r_rdy": Out(1),
            "r_en": In(1),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        m.submodules.storage = storage = memory.Memory(shape=self.width, depth=depth, init=[])
        write_port = storage.write_port()
        read_port = storage.read_port(domain="comb")
        produce = Signal(range(depth))
        consume = Signal(range(depth))

        do_write = Signal()
        do_read = Signal()
        m.d.comb += [
            do_write.eq(self.w_en & self.w_rdy),
            do_read.eq(self.r_en & self.r_rdy),
            write_port.addr.eq(produce),
            write_port.data.eq(self.w_data),
            write_port.en.eq(do_write),
            read_port.addr.eq(consume),
            self.r_data.eq(read_port.data),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(Mux(produce == depth - 1, 0, produce + 1))
        with m.If(do_read):
            m.d.sync += consume.eq(Mux(consume == depth - 1, 0, consume + 1))

        # The flags' next values from the level's compares with constants (registers only)
        # and the write and read: one LUT level behind the read decision.
        with m.If(do_write & ~do_read):
            m.d.sync += [self.level.eq(self.level + 1),
                         self.r_rdy.eq(1),
                         self.w_rdy.eq(self.level != depth - 1)]
        with m.Elif(do_read & ~do_write):
            m.d.sync += [self.level.eq(self.level - 1),
                         self.r_rdy.eq(self.level != 1),
                         self.w_rdy.eq(1)]
        return m
