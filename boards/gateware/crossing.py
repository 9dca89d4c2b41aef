"""The host bus from the link's clock domain into the engine's.

The link (UART and bridge) runs in its own, slower clock domain so that its state machine
never competes with the engine for the clock period; this component carries its bus operations
across.  It is a four-phase handshake made of two toggles: the link side flips ``request``; the
engine side sees the flip through a two-flip-flop synchroniser, performs the operation, and
flips ``acknowledge``, which comes back through another synchroniser.  Only the toggles are
sampled across the boundary.  The address, the write data and the read data are not copied:
the link holds its address and data from the request until ``idle`` again, and the engine holds
``r_data`` from a read until the next one, so each is stable for at least two cycles of the
clock that reads it before the toggle that announces it arrives.  The clocks need no relation
to each other, and on a board the paths between them are not timed.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import cdc, enum, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import bus

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

    Members
    -------
    link : In(host bus), link domain.  A ``w_en`` or ``r_en`` is taken while ``idle``; ``addr``
        and ``w_data`` must then hold until ``idle`` returns.  ``r_valid`` comes when the read
        is back (any number of link cycles later), with ``r_data`` held until the next read.
    link_reset : In, link domain; a one-cycle request to pulse ``engine_reset`` (while ``idle``).
    idle : Out, link domain; no operation is in flight.
    busy : Out, link domain; ``engine_busy``, synchronised.
    engine : Out(host bus), sync domain; ``w_en`` and ``r_en`` from flip-flops, ``addr`` and
        ``w_data`` the link's (held).  The engine must hold ``r_data`` until its next read.
    engine_reset : Out, sync domain; a one-cycle pulse from a flip-flop.
    engine_busy : In, sync domain.
    """
    link: In(bus.host_bus_signature())
    link_reset: In(1)
    idle: Out(1)
    busy: Out(1)
    engine: Out(bus.host_bus_signature())
    engine_reset: Out(1)
    engine_busy: In(1)

    def __init__(self, link_domain: str = "link", *, settle: int = 2):
        self._link_domain = link_domain
        self._settle = settle
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        link = m.d[self._link_domain]

        # ---- link side: flip `request`, wait for `acknowledge` ------------------------------
        # The two toggles, each written in one domain and read through a synchroniser.
        request = Signal()                         # link domain
        acknowledge = Signal()                     # sync domain
        request_seen, request_taken = Signal(), Signal()            # sync domain
        acknowledge_seen, acknowledge_taken = Signal(), Signal()    # link domain
        kind = Signal(Kind)                        # link domain, held like the address
        m.submodules.acknowledge_sync = cdc.FFSynchronizer(
            acknowledge, acknowledge_seen, o_domain=self._link_domain)
        m.submodules.busy_sync = cdc.FFSynchronizer(
            self.engine_busy, self.busy, o_domain=self._link_domain)
        m.d.comb += self.idle.eq(request == acknowledge_taken)
        with m.If(self.idle):
            with m.If(self.link.w_en | self.link.r_en | self.link_reset):
                link += [
                    kind.eq(Mux(self.link_reset, Kind.RESET,
                                Mux(self.link.r_en, Kind.READ, Kind.WRITE))),
                    request.eq(~request),
                ]
        with m.Elif(acknowledge_seen != acknowledge_taken):
            link += acknowledge_taken.eq(acknowledge_seen)
            m.d.comb += self.link.r_valid.eq(kind == Kind.READ)
        m.d.comb += [
            self.link.r_data.eq(self.engine.r_data),
            self.engine.addr.eq(self.link.addr),
            self.engine.w_data.eq(self.link.w_data),
        ]

        # ---- engine side: see the flip, perform, answer -------------------------------------
        m.submodules.request_sync = cdc.FFSynchronizer(request, request_seen)
        wait = Signal(range(self._settle + 1))
        m.d.sync += [self.engine.w_en.eq(0), self.engine.r_en.eq(0), self.engine_reset.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(request_seen != request_taken):
                    m.d.sync += [
                        request_taken.eq(request_seen),
                        self.engine.w_en.eq(kind == Kind.WRITE),
                        self.engine.r_en.eq(kind == Kind.READ),
                        self.engine_reset.eq(kind == Kind.RESET),
                        wait.eq(self._settle),
                    ]
                    with m.If(kind == Kind.READ):
                        m.next = "READ"
                    with m.Else():
                        m.next = "SETTLE"
            with m.State("READ"):
                with m.If(self.engine.r_valid):
                    m.d.sync += acknowledge.eq(~acknowledge)
                    m.next = "IDLE"
            with m.State("SETTLE"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += acknowledge.eq(~acknowledge)
                    m.next = "IDLE"
        return m
