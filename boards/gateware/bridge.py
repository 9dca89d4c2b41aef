"""The link bridge: SLIP frames from the UART in, engine host-bus operations, replies out.

Implements docs/protocol.md (``boards/protocol.py`` is the definition it is tested against) with
four parts:

* the frame receiver (``frame_receiver.py``): unescapes a frame into a buffer and checks it;
  nothing is executed before the closing END shows the CRC good, so a corrupted frame (a
  flipped address bit) can never write a stray memory;
* the command executor (``command_executor.py``): the state machine that executes the frame's
  command on the engine's host bus, answers a retried side-effecting command from its cache,
  refuses one of an earlier host session, holds the loaded image's identity, and produces the
  reply;
* the SLIP encoder (``slip.py``): escapes the reply on its way to the UART, as it is produced;
* the reply's CRC unit (``crc.py``); the frame receiver has its own, since it takes the next
  frame while the executor answers the last one.
"""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import bus
from sparseforge.compiler.config import EngineConfig

from .. import protocol
from .command_executor import CommandExecutor
from .crc import CRC16
from .frame_receiver import FrameReceiver
from .slip import SlipEncoder

__all__ = ["LinkBridge"]


class LinkBridge(wiring.Component):
    """Parameters
    ----------
    config : the engine's configuration (for activation addressing).
    max_payload : the frame buffer's payload capacity in bytes.
    image_identity : the identity (``protocol.image_identity``) of the image the engine's
        memories start with, or 0 for none.

    Members
    -------
    rx : In(stream of bytes) from the UART receiver (never back-pressured).
    tx : Out(stream of bytes) to the UART transmitter.
    bus : Out(host bus) to the engine.
    engine_busy : In; the engine is running.
    bus_idle : In; the bus can take an operation and the last one is complete (a clock-domain
        crossing between the bridge and the engine lowers it while an operation is in flight;
        wired to the engine directly, it stays 1).
    engine_reset : Out; one-cycle pulse (the RESET command).
    activity : Out; a frame is being executed or answered (for an LED).
    """

    def __init__(self, config: EngineConfig, max_payload: int = protocol.MAX_PAYLOAD,
                 image_identity: int = 0):
        self._config = config
        self._max_payload = max_payload
        self._image_identity = image_identity
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(bus.host_bus_signature()),
            "engine_busy": In(1),
            "bus_idle": In(1, init=1),
            "engine_reset": Out(1),
            "activity": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = FrameReceiver(self._config, self._max_payload)
        m.submodules.executor = executor = CommandExecutor(self._config, self._max_payload,
                                                           self._image_identity)
        m.submodules.encoder = encoder = SlipEncoder()
        m.submodules.crc = crc = CRC16()

        wiring.connect(m, wiring.flipped(self.rx), receiver.rx)
        wiring.connect(m, receiver.frame, executor.frame)
        wiring.connect(m, executor.reply, encoder.i)
        wiring.connect(m, encoder.o, wiring.flipped(self.tx))
        wiring.connect(m, executor.bus, wiring.flipped(self.bus))
        m.d.comb += [
            executor.engine_busy.eq(self.engine_busy),
            executor.bus_idle.eq(self.bus_idle),
            self.engine_reset.eq(executor.engine_reset),
            self.activity.eq(receiver.frame.valid),
        ]

        # The reply's CRC unit takes each reply byte the encoder takes, delimiters excepted;
        # the executor restarts it around every reply.
        with m.If(encoder.i.valid & encoder.i.ready & ~encoder.i.payload.raw):
            m.d.comb += [crc.byte.eq(encoder.i.payload.byte), crc.step.eq(1)]
        m.d.comb += [crc.clear.eq(executor.crc_clear), executor.crc.eq(crc.value)]
        return m
