"""The engine behind its UART link: what a board carries, minus clocking and pins.

``LinkedEngine`` is what the board top instantiates and what the board simulation runs: UART
receiver and transmitter, the link bridge, and the engine, whose state the RESET command clears
(the loaded model stays: memories are not reset).

The link runs in its own clock domain, ``link``, on a clock of its own (``link_clk``: on a board
the oscillator, or a PLL output that is a whole multiple of the baud rate), and its bus
operations reach the engine through ``BusCrossing``.  The UART's bit time must be a whole
number of its clock's cycles; the engine's clock comes from a PLL at whatever the build can
reach, so it cannot be that clock.  A clock of its own also keeps the link bridge's state
machine, at the far side of a full die, out of the engine's timing.
"""

from amaranth import ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, Signal
from amaranth.lib import cdc, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.resources import entries_in_spram
from sparseforge.hw.engine import Engine

from .. import protocol
from .bridge import LinkBridge
from .crossing import BusCrossing
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["LinkedEngine"]


class LinkedEngine(wiring.Component):
    """Parameters
    ----------
    config : EngineConfig
    image : the program image the engine's memories start with (or None).
    clocks_per_bit : the UART's bit time in cycles of ``link_clk`` (its frequency / baud rate).

    Members
    -------
    link_clk : In, the link domain's clock (asynchronous to the engine's ``sync`` clock).
    rx : In, the UART line from the host.  tx : Out, the UART line to the host.
    busy : Out, the engine is running.  activity : Out, the link is executing a command.

    Attributes
    ----------
    link_clock : ``link_clk`` (for a clock constraint).
    """
    link_clk: In(1)
    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    activity: Out(1)

    def __init__(self, config: EngineConfig, image=None, *, clocks_per_bit: int,
                 max_payload: int = protocol.MAX_PAYLOAD):
        self._config = config
        self._image = image
        self._clocks_per_bit = clocks_per_bit
        self._max_payload = max_payload
        super().__init__()
        self.link_clock = self.link_clk

    def elaborate(self, platform):
        m = Module()
        # The link domain on its own clock, held in reset while the engine's domain is.
        m.domains.link = ClockDomain("link", local=True)
        m.d.comb += ClockSignal("link").eq(self.link_clk)
        m.submodules.link_reset = cdc.ResetSynchronizer(ResetSignal("sync"), domain="link")
        crossing_reset = Signal()

        # The engine's own domain on the engine clock, whose reset is one flip-flop: the RESET
        # command or the board's reset, registered: the OR of the two in front of every
        # flip-flop's reset would sit on the critical path, and nextpnr-ice40 gives a net from
        # one flip-flop a global (nextpnr-ecp5 promotes only clocks).
        m.domains.engine = ClockDomain("engine", local=True)
        engine_reset = Signal(init=1, reset_less=True)
        m.d.sync += engine_reset.eq(crossing_reset | ResetSignal("sync"))
        m.d.comb += [ClockSignal("engine").eq(ClockSignal("sync")),
                     ResetSignal("engine").eq(engine_reset)]
        m.submodules.engine = engine = DomainRenamer("engine")(
            Engine(self._config, self._image, streams=False))
        m.submodules.crossing = crossing = BusCrossing("link")
        link_bits = self._clocks_per_bit
        to_link = DomainRenamer("link")
        # An engine whose entries are in SPRAM (no initial contents) starts without its image:
        # the board says so, and the host loads it (program_run).
        baked = self._image is not None and not entries_in_spram(
            self._config, getattr(platform, "device", "") or "")
        identity = (protocol.image_identity(isa.image_bus_writes(self._config, self._image))
                    if baked else 0)
        m.submodules.bridge = bridge = to_link(LinkBridge(self._config, self._max_payload,
                                                          identity))
        m.submodules.receiver = receiver = to_link(UARTReceiver(link_bits))
        m.submodules.transmitter = transmitter = to_link(UARTTransmitter(link_bits))
        wiring.connect(m, receiver.data, bridge.rx)
        wiring.connect(m, bridge.tx, transmitter.data)
        wiring.connect(m, bridge.bus, crossing.link)
        wiring.connect(m, crossing.engine, engine.bus)
        m.d.comb += [
            crossing.link_reset.eq(bridge.engine_reset),
            bridge.bus_idle.eq(crossing.idle),
            bridge.engine_busy.eq(crossing.busy),
            crossing.engine_busy.eq(engine.busy),
            crossing_reset.eq(crossing.engine_reset),
            receiver.rx.eq(self.rx),
            self.tx.eq(transmitter.tx),
            self.busy.eq(engine.busy),
            self.activity.eq(bridge.activity),
        ]
        return m
