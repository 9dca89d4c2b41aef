"""The host bus from the link's clock domain into the engine's.

The link (UART and bridge) runs in its own, slower clock domain so that its state machine
never competes with the engine for the clock period; this component carries its bus operations
across.  It is a four-phase handshake made of two toggles: the link side holds the operation
(address, data, kind) in registers and flips ``request``; the engine side sees the flip through
a two-flip-flop synchroniser (by then the held operation has been stable for at least two of its
cycles), performs it, and flips ``acknowledge``, which comes back through another synchroniser
with the read data already held.  Only the toggles cross; no multi-bit value is sampled while it
changes.  The clocks need no relation to each other.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import cdc, enum, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hw import isa

__all__ = ["BusCrossing"]


class Kind(enum.Enum, shape=2):
    WRITE = 0
    READ = 1
    RESET = 2


class BusCrossing(wiring.Component):
    """Parameters
    ----------
    link_domain : the domain of the ``link`` side (the engine side is ``sync``).
    settle : engine cycles between a write (or reset) and its acknowledgement, so that what the
        write starts (``busy`` after a RUN) has reached ``engine_busy`` before the link hears of
        the write's completion; both then cross through synchronisers of the same depth.

    Ports
    -----
    link : In(host bus), link domain.  ``r_valid`` comes when the read is back (any number of
        link cycles later); a ``w_en`` or ``r_en`` is only taken while ``idle``.
    link_reset : In, link domain; a one-cycle request to pulse ``engine_reset`` (while ``idle``).
    idle : Out, link domain; no operation is in flight.
    busy : Out, link domain; ``engine_busy``, synchronised.
    engine : Out(host bus), sync domain; every output is a flip-flop.
    engine_reset : Out, sync domain; a one-cycle pulse from a flip-flop.
    engine_busy : In, sync domain.
    """
    link: In(isa.host_bus_signature())
    link_reset: In(1)
    idle: Out(1)
    busy: Out(1)
    engine: Out(isa.host_bus_signature())
    engine_reset: Out(1)
    engine_busy: In(1)

    def __init__(self, link_domain: str = "link", *, settle: int = 2):
        self._link_domain = link_domain
        self._settle = settle
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        link = m.d[self._link_domain]

        # ---- link side: hold the operation, flip `request`, wait for `acknowledge` ----------
        # The two toggles, each written in one domain and read through a synchroniser.
        request = Signal()                         # link domain
        acknowledge = Signal()                     # sync domain
        request_seen, request_taken = Signal(), Signal()            # sync domain
        acknowledge_seen, acknowledge_taken = Signal(), Signal()    # link domain
        held_address = Signal(32)
        held_data = Signal(isa.BUS_DATA_BITS)
        held_kind = Signal(Kind)
        answer = Signal(isa.BUS_DATA_BITS)         # engine side, stable once acknowledged
        m.submodules.acknowledge_sync = cdc.FFSynchronizer(
            acknowledge, acknowledge_seen, o_domain=self._link_domain)
        m.submodules.busy_sync = cdc.FFSynchronizer(
            self.engine_busy, self.busy, o_domain=self._link_domain)
        m.d.comb += self.idle.eq(request == acknowledge_taken)
        with m.If(self.idle):
            with m.If(self.link.w_en | self.link.r_en | self.link_reset):
                link += [
                    held_address.eq(self.link.addr),
                    held_data.eq(self.link.w_data),
                    held_kind.eq(Mux(self.link_reset, Kind.RESET,
                                     Mux(self.link.r_en, Kind.READ, Kind.WRITE))),
                    request.eq(~request),
                ]
        with m.Elif(acknowledge_seen != acknowledge_taken):
            link += acknowledge_taken.eq(acknowledge_seen)
            m.d.comb += self.link.r_valid.eq(held_kind == Kind.READ)
        m.d.comb += self.link.r_data.eq(answer)

        # ---- engine side: see the flip, perform, answer -------------------------------------
        m.submodules.request_sync = cdc.FFSynchronizer(request, request_seen)
        wait = Signal(range(self._settle + 1))
        m.d.sync += [self.engine.w_en.eq(0), self.engine.r_en.eq(0), self.engine_reset.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(request_seen != request_taken):
                    m.d.sync += [
                        request_taken.eq(request_seen),
                        self.engine.addr.eq(held_address),
                        self.engine.w_data.eq(held_data),
                        self.engine.w_en.eq(held_kind == Kind.WRITE),
                        self.engine.r_en.eq(held_kind == Kind.READ),
                        self.engine_reset.eq(held_kind == Kind.RESET),
                        wait.eq(self._settle),
                    ]
                    with m.If(held_kind == Kind.READ):
                        m.next = "READ"
                    with m.Else():
                        m.next = "SETTLE"
            with m.State("READ"):
                with m.If(self.engine.r_valid):
                    m.d.sync += [answer.eq(self.engine.r_data), acknowledge.eq(~acknowledge)]
                    m.next = "IDLE"
            with m.State("SETTLE"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += acknowledge.eq(~acknowledge)
                    m.next = "IDLE"
        return m
