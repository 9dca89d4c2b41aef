"""A synchronous FIFO whose output is two registers, taking turns as the head.

``amaranth.lib.fifo.SyncFIFOBuffered`` keeps its head in one output register, which loads the
next word when the head is read (``r_en``).  When the read decision is itself logic on the
head (the broadcast unit pops its head once every PE that wants it has taken it), that decision
becomes the clock enable of every bit of a wide register: on the ECP5-85F engine (a head of
about 450 bits spread over the die) that fanout is the critical path.

Here the words leave the memory into two slot registers as soon as a slot is free, whatever
the reader does, and a flip-flop selects which slot is the head.  A read flips the selector
and frees the slot: it decides a few one-bit registers, and the slots' loads wait on registers
only.  The cost is a second output register and a two-way multiplexer on the output.

The timing is ``SyncFIFOBuffered``'s, cycle for cycle: a word written into an empty FIFO is at
the output two cycles later, a read of a FIFO with more words shows the next one the next
cycle, and ``depth`` words fit.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PingPongFIFO"]


class PingPongFIFO(wiring.Component):
    """A FIFO of ``depth`` words of ``width`` bits, read from two alternating registers.

    Parameters
    ----------
    width : int
        Bits of a word.
    depth : int
        Words it holds (at least 2: the two slots).

    Attributes
    ----------
    w_data : Signal(width), in
        The word to write.
    w_en : Signal(), in
        Write ``w_data`` at the next clock edge, if ``w_rdy``.
    w_rdy : Signal(), out
        Fewer than ``depth`` words are held.
    r_data : Signal(width), out
        The head, while ``r_rdy``.
    r_rdy : Signal(), out
        The head is valid (a register).
    r_en : Signal(), in
        Read the head at the next clock edge, if ``r_rdy``.
    level : Signal(range(depth + 1)), out
        Words held (a register).
    next_if_read, next_if_kept : Signal(width), out
        What ``r_data`` will be next cycle if the head is read now (with ``r_rdy``), and if it
        is not: a reader that keeps registers derived from the head can load them a cycle
        ahead, choosing between the two with its own read decision (which then meets them
        at one multiplexer, not in front of the slot selector).  Unread, they cost nothing:
        synthesis removes them.
    """

    def __init__(self, *, width: int, depth: int):
        if depth < 2:
            # Refused, so never elaborated: no "created but never used" warning for it (as
            # Amaranth silences its own refused elaboratables).
            self._MustUse__silence = True
            raise ValueError(f"PingPongFIFO depth must be at least 2 (its two slots), not {depth}")
        self.width = width
        self.depth = depth
        super().__init__({
            "w_data": In(width),
            "w_en": In(1),
            "w_rdy": Out(1),
            "r_data": Out(width),
            "r_rdy": Out(1),
            "r_en": In(1),
            "level": Out(range(depth + 1)),
            "next_if_read": Out(width),
            "next_if_kept": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        # The memory holds what the slots cannot; `depth` words leaves it never full while the
        # FIFO has room (its async read becomes LUT RAM on an ECP5, flip-flops on an iCE40).
        inner_depth = self.depth
        m.submodules.storage = storage = memory.Memory(
            shape=self.width, depth=inner_depth, init=[])
        write_port = storage.write_port()
        read_port = storage.read_port(domain="comb")
        produce = Signal(range(inner_depth))
        consume = Signal(range(inner_depth))
        inner_level = Signal(range(inner_depth + 1))

        slots = [Signal(self.width, name=f"slot{index}", reset_less=True) for index in range(2)]
        slot_valid = [Signal(name=f"slot{index}_valid") for index in range(2)]
        head = Signal()                          # which slot is the head

        do_write = Signal()
        do_read = Signal()
        m.d.comb += [
            do_write.eq(self.w_en & self.w_rdy),
            do_read.eq(self.r_en & self.r_rdy),
            write_port.addr.eq(produce),
            write_port.data.eq(self.w_data),
            write_port.en.eq(do_write),
            read_port.addr.eq(consume),
            self.r_data.eq(Mux(head, slots[1], slots[0])),
        ]

        # ---- a word moves from the memory into a free slot: the head's if it is free ----
        # (Decided on registers only; the slot the head leaves this cycle is refilled the next.)
        load = Signal()
        load_into = Signal()                     # the slot it goes to
        head_valid = Mux(head, slot_valid[1], slot_valid[0])
        m.d.comb += [
            load.eq((inner_level != 0) & ~(slot_valid[0] & slot_valid[1])),
            load_into.eq(Mux(head_valid, ~head, head)),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(Mux(produce == inner_depth - 1, 0, produce + 1))
        with m.If(load):
            m.d.sync += consume.eq(Mux(consume == inner_depth - 1, 0, consume + 1))
        with m.If(do_write & ~load):
            m.d.sync += inner_level.eq(inner_level + 1)
        with m.Elif(load & ~do_write):
            m.d.sync += inner_level.eq(inner_level - 1)

        next_valid = [Signal(name=f"next_slot{index}_valid") for index in range(2)]
        next_slots = [Signal(self.width, name=f"next_slot{index}") for index in range(2)]
        for index in range(2):
            loaded = load & (load_into == index)
            read = do_read & (head == index)
            m.d.comb += next_slots[index].eq(Mux(loaded, read_port.data, slots[index]))
            with m.If(loaded):
                m.d.sync += slots[index].eq(read_port.data)
            # A slot is never read and loaded in one cycle: the head is loaded only when empty.
            m.d.comb += next_valid[index].eq(loaded | (slot_valid[index] & ~read))
            m.d.sync += slot_valid[index].eq(next_valid[index])
        next_head = head ^ do_read
        m.d.comb += [self.next_if_read.eq(Mux(head, next_slots[0], next_slots[1])),
                     self.next_if_kept.eq(Mux(head, next_slots[1], next_slots[0]))]
        m.d.sync += [
            head.eq(next_head),
            self.r_rdy.eq(Mux(next_head, next_valid[1], next_valid[0])),
        ]

        with m.If(do_write & ~do_read):
            m.d.sync += self.level.eq(self.level + 1)
        with m.Elif(do_read & ~do_write):
            m.d.sync += self.level.eq(self.level - 1)
        m.d.comb += self.w_rdy.eq(self.level != self.depth)
        return m
