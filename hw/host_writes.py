"""The host bus's write side: which memory or register a write goes to, and the run's start.

The address splits into region, PE and index as ``compiler/bus.py``'s ``ADDRESS_LAYOUT`` says.
Memory writes are refused while the engine is busy (a run reads those memories); the control
register's start and the layer count are registers here, as are the two records of runs the host
reads back (``done``, ``runs``).  Descriptors and occupancy words are wider than the bus: they
arrive as 32-bit chunks, lowest first, staged here until the last one commits the whole word
(``bus.chunk_index``), so a partly written word never lands.  So do the per-row scale words of
an engine with ``multiplier_bits``, which go to the requantizer serving the addressed PE.
A conv engine's geometry words are written chunk by chunk, each its own word of the geometry
memory (the geometry loader reads them so).
"""

from amaranth import Cat, Module, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig

from .activation_ports import lane_write_signature
from .geometry_loader import geometry_depth
from .pe import Target
from .requantize import scale_write_signature, table_write_signature

__all__ = ["HostWriteDecoder", "bus_write_signature", "pe_write_signature"]


def bus_write_signature() -> wiring.Signature:
    """The write half of ``bus.host_bus_signature()``, seen from the master."""
    return wiring.Signature({
        "addr": Out(bus.ADDRESS_BITS),
        "w_data": Out(bus.BUS_DATA_BITS),
        "w_en": Out(1),
    })


def pe_write_signature() -> wiring.Signature:
    """A host write into one PE's memories (the PE's ``write`` member)."""
    return wiring.Signature({
        "en": Out(1),
        "target": Out(Target),
        "addr": Out(bus.INDEX_BITS),
        "data": Out(bus.BUS_DATA_BITS),
    })


_PER_PE_TARGET = {bus.Region.ENTRIES: Target.ENTRIES, bus.Region.POINTERS: Target.POINTERS,
                  bus.Region.BIASES: Target.BIASES}


class HostWriteDecoder(wiring.Component):
    """Routes host writes to the engine's memories and registers.

    Parameters
    ----------
    config : EngineConfig
    layer_count : the layer count register's value after reset (the program image's).

    Members
    -------
    bus : In(``bus_write_signature``); the host bus's writes.
    busy : In; the engine is busy: memory writes and the layer count are refused.
    stream_start : In; the input stream's ``last`` was taken: a start request, like the
        control register's.
    start : Out; registered: a start request of the previous cycle, while not busy.
    run_done : In; the sequencer's pulse at the end of a run.
    layer_count : Out; the layers a run executes (``bus.Register.LAYER_COUNT``).
    done : Out; sticky: the last run finished (cleared by the next start).
    runs : Out(16); runs of at least one layer started since reset.
    descriptors : In(``memory.WritePort.Signature``); the descriptor memory's write port,
        driven here with whole words.
    codebook : In(``memory.WritePort.Signature``); the codebook memory's write port.
    occupancy : Out; whole occupancy words, for the broadcast unit's ``occupancy_write``.
    activation : Out(``lane_write_signature``); a write of one activation
        (``isa.activation_index``).
    pe_writes : Out(``pe_write_signature``) per PE; a cycle after the bus write, to the
        addressed PE only (refused if the engine was busy in the cycle of the bus write).
    scale_writes : Out(``requantize.scale_write_signature``) per requantizer, with
        ``config.multiplier_bits`` only; a whole scale word (``bus.Region.SCALES``, PE ``k``,
        index ``i``) for the requantizer of PE ``k``, at word ``i * period + k % period``, a
        cycle after its last chunk (refused while busy, as the PE writes are).
    geometry : In(``memory.WritePort.Signature``), conv engines only; the geometry memory's
        write port, a chunk (``bus.Region.GEOMETRY``, index ``bus.chunk_index``) a word.
    tables : Out(``requantize.table_write_signature``), with ``config.table_slots`` only; a
        word of the activation tables (``bus.Region.TABLES``), a cycle after the bus write
        (refused while busy), to every requantizer.
    """

    def __init__(self, config: EngineConfig, *, layer_count: int = 0):
        if not 0 <= layer_count <= config.max_layers:
            # Refused, so never elaborated: no "created but never used" warning for it.
            self._MustUse__silence = True
            raise ValueError(f"layer_count {layer_count} is out of range "
                             f"(max_layers {config.max_layers})")
        self._config = config
        self._layer_count = layer_count
        descriptor_width = isa.descriptor_layout(config).size
        occupancy_width = isa.occupancy_layout(config).size
        ports = {
            "bus": In(bus_write_signature()),
            "busy": In(1),
            "stream_start": In(1),
            "start": Out(1),
            "run_done": In(1),
            "layer_count": Out(range(config.max_layers + 1), init=layer_count),
            "done": Out(1),
            "runs": Out(16),
            "descriptors": In(memory.WritePort.Signature(
                addr_width=ceil_log2(config.max_layers), shape=descriptor_width)),
            "codebook": In(memory.WritePort.Signature(
                addr_width=ceil_log2(config.max_layers * config.codebook_size),
                shape=signed(config.coef_bits))),
            "occupancy": Out(wiring.Signature({
                "en": Out(1),
                "addr": Out(ceil_log2(max(2, config.occupancy_depth))),
                "data": Out(occupancy_width),
            })),
            "activation": Out(lane_write_signature(config)),
            "pe_writes": Out(pe_write_signature()).array(config.pes),
        }
        if config.row_scales:
            ports["scale_writes"] = Out(scale_write_signature(config)).array(
                config.pes // config.writeback_period)
        if config.table_slots:
            ports["tables"] = Out(table_write_signature(config))
        if config.conv:
            ports["geometry"] = In(memory.WritePort.Signature(
                addr_width=ceil_log2(max(2, geometry_depth(config))), shape=bus.BUS_DATA_BITS))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        config = self._config
        host_bus = self.bus
        address = data.View(bus.ADDRESS_LAYOUT, host_bus.addr)
        region = address.region
        index = address.index
        writing = Signal()
        m.d.comb += writing.eq(host_bus.w_en & ~self.busy)

        # Wide words (descriptors, occupancy) arrive as 32-bit chunks; the last commits.
        descriptor_width = isa.descriptor_layout(config).size
        occupancy_width = isa.occupancy_layout(config).size
        descriptor_chunks = bus.chunks_of(descriptor_width)
        occupancy_chunks = bus.chunks_of(occupancy_width)
        wide_words = [(bus.Region.DESCRIPTORS, descriptor_width),
                      (bus.Region.OCCUPANCY, occupancy_width)]
        if config.row_scales:
            wide_words.append((bus.Region.SCALES, isa.scale_layout(config).size))
        staged = Signal(32 * max(bus.chunks_of(width) for _, width in wide_words))
        for what, width in wide_words:
            chunks = bus.chunks_of(width)
            if chunks > 1:
                chunk = index[:bus.chunk_bits(width)]
                with m.If(writing & (region == what) & (chunk < chunks - 1)):
                    with m.Switch(chunk):
                        for c in range(chunks - 1):
                            with m.Case(c):
                                m.d.sync += staged[32 * c:32 * (c + 1)].eq(host_bus.w_data)
        descriptor_chunk = index[:bus.chunk_bits(descriptor_width)] if descriptor_chunks > 1 else 0
        occupancy_chunk = index[:bus.chunk_bits(occupancy_width)] if occupancy_chunks > 1 else 0
        lane_bits = isa.lane_bits(config)
        m.d.comb += [
            self.descriptors.addr.eq(index >> bus.chunk_bits(descriptor_width)),
            self.descriptors.data.eq(Cat(staged[:32 * (descriptor_chunks - 1)], host_bus.w_data)),
            self.descriptors.en.eq(writing & (region == bus.Region.DESCRIPTORS)
                                   & (descriptor_chunk == descriptor_chunks - 1)),
            self.occupancy.addr.eq(index >> bus.chunk_bits(occupancy_width)),
            self.occupancy.data.eq(Cat(staged[:32 * (occupancy_chunks - 1)], host_bus.w_data)),
            self.occupancy.en.eq(writing & (region == bus.Region.OCCUPANCY)
                                 & (occupancy_chunk == occupancy_chunks - 1)),
            self.codebook.addr.eq(index),
            self.codebook.data.eq(host_bus.w_data),
            self.codebook.en.eq(writing & (region == bus.Region.CODEBOOK)),
            self.activation.en.eq(writing & (region == bus.Region.ACTIVATIONS)),
            self.activation.addr.eq(index >> lane_bits),
            # One PE: a word of one lane, whatever the index's bits (lane_bits is 0).
            self.activation.lane.eq(index[:lane_bits] if lane_bits else 0),
            self.activation.value.eq(host_bus.w_data[:config.act_bits]),
        ]

        self._pe_writes(m, region, address.pe, index)
        if config.conv:
            m.d.comb += [self.geometry.addr.eq(index), self.geometry.data.eq(host_bus.w_data),
                         self.geometry.en.eq(writing & (region == bus.Region.GEOMETRY))]
        if config.row_scales:
            self._scale_writes(m, writing, region, address.pe, index, staged)
        if config.table_slots:
            # Registered: the tables are in every requantizer, spread over the die.
            m.d.sync += [self.tables.en.eq(writing & (region == bus.Region.TABLES)),
                         self.tables.addr.eq(index), self.tables.data.eq(host_bus.w_data)]

        registers_write = host_bus.w_en & (region == bus.Region.REGISTERS)
        with m.If(registers_write & (index == bus.Register.LAYER_COUNT) & ~self.busy):
            m.d.sync += self.layer_count.eq(host_bus.w_data)
        bus_start = registers_write & (index == bus.Register.CONTROL) & host_bus.w_data[0]
        # A request is registered before it starts the sequencer: the bus write and the stream's
        # `last` come from outside (behind a clock-domain crossing on a board), and their decode
        # would otherwise sit in one cycle with the sequencer's state machine.  `busy` covers the
        # cycle in between, so the host sees busy the cycle after its write.
        m.d.sync += self.start.eq(~self.busy & (bus_start | self.stream_start))

        with m.If(self.start):
            m.d.sync += self.done.eq(0)
            with m.If(self.layer_count != 0):
                m.d.sync += self.runs.eq(self.runs + 1)
        with m.If(self.run_done):
            m.d.sync += self.done.eq(1)
        return m

    def _pe_writes(self, m, region, target_pe, index):
        pes = self._config.pes
        host_bus = self.bus
        target = Signal(Target)
        with m.Switch(region):
            for what, code in _PER_PE_TARGET.items():
                with m.Case(what):
                    m.d.comb += target.eq(code)
        per_pe_region = Cat(region == what for what in _PER_PE_TARGET).any()
        # Registered: the decision (the sequencer's busy, the region and PE decode) would
        # otherwise run to every PE's memory write enables in one cycle, spread over the die.
        # Nothing reads the PE memories over the bus, so the cycle's delay is invisible.  The
        # request and the refusal (`busy`, late in the cycle) are registered apart and ANDed
        # after, per PE.
        pe_write_addr = Signal.like(index)
        pe_write_request = Signal(pes)
        pe_write_refused = Signal()
        pe_write_en = Signal(pes)
        pe_write_target = Signal(Target)
        pe_write_data = Signal.like(host_bus.w_data)
        m.d.comb += pe_write_en.eq(pe_write_request & ~pe_write_refused.replicate(pes))
        m.d.sync += [
            pe_write_request.eq(Cat(host_bus.w_en & per_pe_region & (target_pe == k)
                                    for k in range(pes))),
            pe_write_refused.eq(self.busy),
            pe_write_target.eq(target),
            pe_write_addr.eq(index),
            pe_write_data.eq(host_bus.w_data),
        ]
        for k, write in enumerate(self.pe_writes):
            m.d.comb += [
                write.en.eq(pe_write_en[k]),
                write.target.eq(pe_write_target),
                write.addr.eq(pe_write_addr),
                write.data.eq(pe_write_data),
            ]

    def _scale_writes(self, m, writing, region, target_pe, index, staged):
        """A whole scale word, registered a cycle (as the PE writes are), to the requantizer
        of the addressed PE."""
        config = self._config
        period = config.writeback_period
        width = isa.scale_layout(config).size
        chunks = bus.chunks_of(width)
        chunk = index[:bus.chunk_bits(width)] if chunks > 1 else 0
        word = index >> bus.chunk_bits(width)
        groups = config.pes // period
        request = Signal(groups)
        address = Signal(range(max(2, config.scale_depth)))
        value = Signal(width)
        commit = writing & (region == bus.Region.SCALES) & (chunk == chunks - 1)
        phase = target_pe % period if period > 1 else 0
        m.d.sync += [
            request.eq(Cat(commit & (target_pe // period == g) for g in range(groups))),
            address.eq(word * period + phase),
            value.eq(Cat(staged[:32 * (chunks - 1)], self.bus.w_data)[:width]),
        ]
        for g, write in enumerate(self.scale_writes):
            m.d.comb += [write.en.eq(request[g]), write.addr.eq(address),
                         write.data.eq(value)]
