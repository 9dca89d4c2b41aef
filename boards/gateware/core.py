"""The engine behind its UART link: what a board carries, minus clocking and pins.

``LinkedEngine`` is what the board top instantiates and what the board simulation runs: UART
receiver and transmitter, the link bridge, and the engine, whose state the RESET command clears
(the loaded model stays: memories are not reset).
"""

from amaranth import Module, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hw.config import EngineConfig
from sparseforge.hw.engine import Engine

from .. import protocol
from .bridge import LinkBridge
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["LinkedEngine"]


class LinkedEngine(wiring.Component):
    """Parameters
    ----------
    config : EngineConfig
    image : the program image the engine's memories start with (or None).
    clocks_per_bit : the UART's bit time in clock cycles (clock frequency / baud rate).

    Ports
    -----
    rx : In, the UART line from the host.  tx : Out, the UART line to the host.
    busy : Out, the engine is running.  activity : Out, the link is executing a command.
    """
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

    def elaborate(self, platform):
        m = Module()
        engine_reset = Signal()
        m.submodules.engine = engine = ResetInserter(engine_reset)(
            Engine(self._config, self._image, streams=False))
        m.submodules.bridge = bridge = LinkBridge(self._config, self._max_payload)
        m.submodules.receiver = receiver = UARTReceiver(self._clocks_per_bit)
        m.submodules.transmitter = transmitter = UARTTransmitter(self._clocks_per_bit)
        wiring.connect(m, receiver.data, bridge.rx)
        wiring.connect(m, bridge.tx, transmitter.data)
        # A register stage each way between the bridge and the engine: both are state machines
        # whose outputs are decoded from their states, and on an iCE40 a path from one's state
        # through the other's decode to the memory enables spread over the die does not fit a
        # clock period.  The bridge waits for r_valid and allows for the late busy (RUN_SETTLE).
        m.d.sync += [
            engine.bus.addr.eq(bridge.bus.addr),
            engine.bus.w_data.eq(bridge.bus.w_data),
            engine.bus.w_en.eq(bridge.bus.w_en),
            engine.bus.r_en.eq(bridge.bus.r_en),
            bridge.engine_busy.eq(engine.busy),
            # The RESET command reaches every engine register: from a flip-flop, nextpnr can
            # give it a global net, and the bridge's command decode stays out of the path.
            engine_reset.eq(bridge.engine_reset),
        ]
        m.d.comb += [
            bridge.bus.r_data.eq(engine.bus.r_data),
            bridge.bus.r_valid.eq(engine.bus.r_valid),
            receiver.rx.eq(self.rx),
            self.tx.eq(transmitter.tx),
            self.busy.eq(engine.busy),
            self.activity.eq(bridge.activity),
        ]
        return m
