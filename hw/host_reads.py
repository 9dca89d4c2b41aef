"""The host bus's read side: registers, cycle counters and activations, ``READ_LATENCY`` cycles
after ``r_en``.

A read answers with the register (``bus.Register``), the cycle counter at the end of a layer
(``bus.Region.CYCLES``) or one activation (``bus.Region.ACTIVATIONS``, a lane of the activation
buffer's word, which the host reads only while the engine neither computes nor streams its
outputs); any other region reads 0.  The answer comes a fixed ``bus.READ_LATENCY`` = 4
cycles later whatever was read, so that a master needs no handshake.
"""

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div

from .activation_ports import read_signature

__all__ = ["HostReadPath", "bus_read_signature"]


def bus_read_signature() -> wiring.Signature:
    """The read half of ``bus.host_bus_signature()``, seen from the master."""
    return wiring.Signature({
        "addr": Out(bus.ADDRESS_BITS),
        "r_en": Out(1),
        "r_data": In(bus.BUS_DATA_BITS),
        "r_valid": In(1),
    })


class HostReadPath(wiring.Component):
    """Answers the host's reads.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    bus : In(``bus_read_signature``); the host bus's reads.
    busy, done, layer_count, total_cycles, input_count, runs : In; the values of the
        registers read (``bus.Register``): the engine's state, sampled a cycle after ``r_en``.
    cycles : In(``memory.ReadPort.Signature``); the cycle counter memory's read port, driven
        here (the counter of layer ``index``).
    activations : Out(``activation_ports.read_signature``); reads of the activation buffer's
        word holding activation ``index`` (served while the engine is idle).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "bus": In(bus_read_signature()),
            "busy": In(1),
            "done": In(1),
            "layer_count": In(range(config.max_layers + 1)),
            "total_cycles": In(32),
            "input_count": In(range(config.max_features + 1)),
            "runs": In(16),
            "cycles": In(memory.ReadPort.Signature(addr_width=ceil_log2(config.max_layers),
                                                   shape=32)),
            "activations": Out(read_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes = config.pes
        lane_bits = isa.lane_bits(config)
        host_bus = self.bus
        address = data.View(bus.ADDRESS_LAYOUT, host_bus.addr)
        index = address.index
        m.d.comb += [
            self.activations.addr.eq(index >> lane_bits),
            self.activations.en.eq(host_bus.r_en),
            self.cycles.addr.eq(index),
        ]

        # First cycle: the memories read and the request is registered; second: registers and
        # cycle counters are selected (from the registered index); third: the activation
        # buffer's word has landed (late: it comes out of block RAM) and one of each four lanes
        # is picked; fourth: the lane, or the selected word, goes to r_data.
        read_region = Signal(bus.Region)
        read_index = Signal(3)
        read_pending = Signal()
        read_lane = Signal(range(max(2, pes)))
        m.d.sync += [
            read_pending.eq(host_bus.r_en),
            read_region.eq(address.region),
            read_index.eq(index[:3]),
            read_lane.eq(index[:lane_bits] if lane_bits else 0),
        ]
        register_value = Signal(32)
        with m.Switch(read_index):
            with m.Case(bus.Register.ID):
                m.d.comb += register_value.eq(bus.ENGINE_ID)
            with m.Case(bus.Register.CONFIG):
                m.d.comb += register_value.eq(pes | (config.act_bits << 8)
                                              | (config.code_bits << 16)
                                              | (config.scan_lanes << 24))
            with m.Case(bus.Register.CONTROL):
                m.d.comb += register_value.eq(Cat(self.busy, self.done))
            with m.Case(bus.Register.LAYER_COUNT):
                m.d.comb += register_value.eq(self.layer_count)
            with m.Case(bus.Register.TOTAL_CYCLES):
                m.d.comb += register_value.eq(self.total_cycles)
            with m.Case(bus.Register.INPUT_COUNT):
                m.d.comb += register_value.eq(self.input_count)
            with m.Case(bus.Register.RUNS):
                m.d.comb += register_value.eq(self.runs)
        selected = Signal(32)
        selected_pending = Signal()
        selected_activation = Signal()
        selected_lane = Signal.like(read_lane)
        m.d.sync += [
            selected_pending.eq(read_pending),
            selected_activation.eq(read_region == bus.Region.ACTIVATIONS),
            selected_lane.eq(read_lane),
        ]
        with m.Switch(read_region):
            with m.Case(bus.Region.REGISTERS):
                m.d.sync += selected.eq(register_value)
            with m.Case(bus.Region.CYCLES):
                m.d.sync += selected.eq(self.cycles.data)
            with m.Default():
                m.d.sync += selected.eq(0)
        assert bus.READ_LATENCY == 4
        part_lanes = min(4, pes)
        parts = ceil_div(pes, part_lanes)
        lane_values = self.activations.data
        picked = Signal(data.ArrayLayout(signed(config.act_bits), parts), reset_less=True)
        picked_word = Signal(32, reset_less=True)
        picked_pending = Signal()
        picked_activation = Signal()
        picked_part = Signal(range(max(2, parts)))
        within = selected_lane % part_lanes if part_lanes > 1 else 0
        m.d.sync += [
            picked_pending.eq(selected_pending),
            picked_activation.eq(selected_activation),
            picked_part.eq(selected_lane // part_lanes),
            picked_word.eq(selected),
        ]
        for part in range(parts):
            members = Array(lane_values[k] for k in range(part * part_lanes,
                                                   min(pes, (part + 1) * part_lanes)))
            m.d.sync += picked[part].eq(members[within])
        with m.If(picked_pending):
            m.d.sync += host_bus.r_data.eq(Mux(picked_activation, picked[picked_part], picked_word))
        m.d.sync += host_bus.r_valid.eq(picked_pending)
        return m
