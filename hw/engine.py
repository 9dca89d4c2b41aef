"""The sparse inference engine: broadcast unit, N processing elements, sequencer, host bus.

An EIE-style engine (Han et al., ISCA 2016) generated from an :class:`EngineConfig`:

* the activation buffer holds a layer's input, ``pes`` activations per word; the PEs' write-back
  overwrites it with the layer's output, one word per cycle (EIE's source and destination
  register files, merged: a layer's input is dead by the time its output is written);
* the broadcast unit scans it and queues each PE's work (``broadcast.py``);
* the PEs multiply and accumulate (``pe.py``), the sequencer runs the layers (``sequencer.py``).

Interfaces: ``input`` (a stream of activations; ``last`` starts the run), ``output`` (the last
layer's activations after a run), and ``bus`` (``bus.host_bus_signature``): memory writes, so
a new model of the same shape class loads without regenerating the engine, and reads of status,
activations and per-layer cycle counters.  Memories start from the program image when one is
given.
"""

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div

from . import ram
from .activation_buffer import ActivationBuffer
from .broadcast import BroadcastUnit
from .pe import ProcessingElement, Target
from .requantize import Requantizer
from .sequencer import Sequencer
from .writeback import PES_PER_SCHEDULE, WritebackSchedule

__all__ = ["Engine"]


class Engine(wiring.Component):
    """The whole engine.

    Parameters
    ----------
    config : EngineConfig
    image : the program image to initialise the memories with (an object with ``entries``,
        ``pointers`` and ``biases`` per PE, ``codebook``, ``occupancy``, ``descriptors`` and
        ``layer_count``), or None for empty memories that the host fills over the bus.
    streams : with the ``input`` and ``output`` streams (False: the host bus only, as on a board
        behind its UART link, where the streams would be dead logic).

    Ports
    -----
    input : In(stream of ``isa.stream_layout``); activations in order; ``last`` starts the run.
    output : Out(stream of ``isa.stream_layout``); the last layer's outputs after each run (the
        engine stays busy until they are taken).
    bus : In(``bus.host_bus_signature()``).
    busy : Out; a run, the clear after reset, or the output stream is in progress.
    """

    def __init__(self, config: EngineConfig, image=None, *, streams: bool = True):
        self._config = config
        self._image = image
        self._streams = streams
        ports = {"bus": In(bus.host_bus_signature()), "busy": Out(1)}
        if streams:
            ports["input"] = In(stream.Signature(isa.stream_layout(config)))
            ports["output"] = Out(stream.Signature(isa.stream_layout(config)))
        super().__init__(ports)

    @property
    def config(self) -> EngineConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        image = self._image
        pes = config.pes
        lane_bits = isa.lane_bits(config)

        # ---- components ---------------------------------------------------------------------
        m.submodules.sequencer = sequencer = Sequencer(config)
        m.submodules.broadcast = broadcast = BroadcastUnit(
            config, occupancy=None if image is None else image.occupancy)
        processing_elements = []
        for k in range(pes):
            pe = ProcessingElement(
                config,
                entries=None if image is None else isa.entry_words(config, image, k),
                pointers=None if image is None else image.pointers[k],
                biases=None if image is None else image.biases[k])
            m.submodules[f"pe{k}"] = pe
            processing_elements.append(pe)

        # ---- memories -----------------------------------------------------------------------
        descriptor = isa.descriptor_layout(config)
        # On an iCE40 the descriptors would take ~100 logic cells as flip-flops and a mux; the
        # part has block RAMs to spare once the activation buffer sits in SPRAM.
        # Only the host writes the descriptors and the codebook (hw/ram.py).
        small_part = (getattr(platform, "device", "") or "").startswith("iCE40")
        m.submodules.descriptors = descriptors = memory.Memory(
            shape=descriptor.size, depth=config.max_layers,
            init=[] if image is None else [int(d) for d in image.descriptors],
            attrs={"ram_style": "block", **ram.ATTRIBUTES} if small_part else ram.ATTRIBUTES)
        # Small enough that Yosys would build it from flip-flops; a block RAM is cheaper.
        m.submodules.codebook = codebook = memory.Memory(
            shape=signed(config.coef_bits), depth=config.max_layers * config.codebook_size,
            init=[] if image is None else [int(c) for c in _flat(image.codebook)],
            attrs={"ram_style": "block", **ram.ATTRIBUTES})
        m.submodules.activations = activations = ActivationBuffer(config)
        m.submodules.cycles = cycles = memory.Memory(shape=32, depth=config.max_layers, init=[])

        descriptors_w = descriptors.write_port()
        descriptors_r = ram.registered_read_port(m, descriptors, "descriptors_read")
        codebook_w = codebook.write_port()
        codebook_r = ram.registered_read_port(m, codebook, "codebook_read")
        cycles_w, cycles_r = cycles.write_port(), cycles.read_port()

        layer_count = Signal(range(config.max_layers + 1),
                             init=0 if image is None else int(image.layer_count))
        busy = Signal()
        done = Signal()         # sticky: the last run finished (cleared by the next start)
        start = Signal()        # registered: the sequencer starts the cycle after the request
        unloading = Signal()

        # ---- sequencer wiring ---------------------------------------------------------------
        m.d.comb += [
            sequencer.start.eq(start),
            sequencer.layer_count.eq(layer_count),
            descriptors_r.addr.eq(sequencer.descriptors.addr),
            sequencer.descriptors.data.eq(descriptors_r.data),
            codebook_r.addr.eq(sequencer.codebook.addr),
            sequencer.codebook.data.eq(codebook_r.data),
            broadcast.start.eq(sequencer.broadcast_start),
            broadcast.groups.eq(sequencer.layer.groups),
            broadcast.occupancy_base.eq(sequencer.layer.occupancy_base),
            broadcast.pointer_base.eq(sequencer.layer.pointer_base),
            sequencer.pes_busy.eq(Cat(pe.busy for pe in processing_elements).any()),

            busy.eq(sequencer.busy | unloading | start),
            self.busy.eq(busy),
        ]
        if config.link_registers:
            # The PEs' busy flags come a cycle late: the broadcast unit's idle is delayed to
            # match, so that the sequencer sees one cycle's state of both (and the cycle it
            # starts the broadcast unit does not count as idle).
            broadcast_idle = Signal()
            m.d.sync += broadcast_idle.eq(broadcast.idle & ~sequencer.broadcast_start)
            m.d.comb += sequencer.broadcast_idle.eq(broadcast_idle)
        else:
            m.d.comb += sequencer.broadcast_idle.eq(broadcast.idle)
        # The cycle counts are written a cycle after the sequencer records them: nothing reads
        # them that soon, and the sequencer's end-of-layer decision stays out of the path to
        # the counters' memory (flip-flops on an iCE40, where it has two words).
        m.d.sync += [
            cycles_w.en.eq(sequencer.cycles_write.en),
            cycles_w.addr.eq(sequencer.cycles_write.addr),
            cycles_w.data.eq(sequencer.cycles_write.data),
        ]
        runs = Signal(16)
        with m.If(start):
            m.d.sync += done.eq(0)
            with m.If(layer_count != 0):
                m.d.sync += runs.eq(runs + 1)
        with m.If(sequencer.done):
            m.d.sync += done.eq(1)

        # The running layer's codebook: one register file, read by every PE.  Its writes are
        # registered, so the sequencer's loader drives one small register, not the enables of a
        # file spread among the PEs.  The last value lands a cycle after the loader says
        # loaded, many cycles before the layer's first product (PIPELINE_FILL).
        codebook_values = Signal(data.ArrayLayout(signed(config.coef_bits),
                                                  config.codebook_size))
        codebook_write_en = Signal()
        codebook_write_index = Signal.like(sequencer.codebook_write.index)
        codebook_write_value = Signal.like(sequencer.codebook_write.value)
        m.d.sync += [codebook_write_en.eq(sequencer.codebook_write.en),
                     codebook_write_index.eq(sequencer.codebook_write.index),
                     codebook_write_value.eq(sequencer.codebook_write.value)]
        with m.If(codebook_write_en):
            m.d.sync += codebook_values[codebook_write_index].eq(codebook_write_value)

        # Where the layer's biases start in every PE's parameter memory (after the columns).
        # Registered: the descriptor is read long before the write-back needs it.
        bias_base = Signal(range(config.parameter_depth))
        m.d.sync += bias_base.eq(config.pointer_depth + sequencer.layer.bias_base)
        # Likewise the write-back's row count and requantize parameters: the descriptor is a
        # block RAM's output, and `rows` is the sequencer's choice between it and the clear
        # after reset; each goes to every PE or requantizer.  The register starts at the
        # clear's row count, which the first write-back after reset uses.
        layer_rows = Signal.like(sequencer.layer.rows, init=config.max_rows)
        layer_shift = Signal.like(sequencer.layer.shift)
        layer_relu = Signal()
        m.d.sync += [layer_rows.eq(sequencer.layer.rows), layer_shift.eq(sequencer.layer.shift),
                     layer_relu.eq(sequencer.layer.relu)]

        for first in range(0, pes, PES_PER_SCHEDULE):
            schedule = WritebackSchedule(config)
            m.submodules[f"writeback{first // PES_PER_SCHEDULE}"] = schedule
            m.d.comb += [schedule.start.eq(sequencer.writeback), schedule.rows.eq(layer_rows),
                         schedule.bias_base.eq(bias_base)]
            for pe in processing_elements[first:first + PES_PER_SCHEDULE]:
                wiring.connect(m, schedule.schedule, pe.writeback)
        for k, (pe, queue) in enumerate(zip(processing_elements, broadcast.queues)):
            wiring.connect(m, queue, pe.queue)
            m.d.comb += broadcast.dequeued[k].eq(pe.dequeued)
            m.d.comb += pe.codebook.eq(codebook_values)

        # ---- host bus: decode -----------------------------------------------------------------
        host_bus = self.bus
        address = data.View(bus.ADDRESS_LAYOUT, host_bus.addr)
        region = address.region
        target_pe = address.pe
        index = address.index
        writing = Signal()
        m.d.comb += writing.eq(host_bus.w_en & ~busy)

        # Wide words (descriptors, occupancy) arrive as 32-bit chunks; the last commits.
        descriptor_chunks = bus.chunks_of(descriptor.size)
        occupancy_width = isa.occupancy_layout(config).size
        occupancy_chunks = bus.chunks_of(occupancy_width)
        staged = Signal(32 * max(descriptor_chunks, occupancy_chunks))
        for what, width in ((bus.Region.DESCRIPTORS, descriptor.size),
                            (bus.Region.OCCUPANCY, occupancy_width)):
            chunks = bus.chunks_of(width)
            if chunks > 1:
                chunk = index[:bus.chunk_bits(width)]
                with m.If(writing & (region == what) & (chunk < chunks - 1)):
                    with m.Switch(chunk):
                        for c in range(chunks - 1):
                            with m.Case(c):
                                m.d.sync += staged[32 * c:32 * (c + 1)].eq(host_bus.w_data)
        descriptor_chunk = index[:bus.chunk_bits(descriptor.size)] if descriptor_chunks > 1 else 0
        occupancy_chunk = index[:bus.chunk_bits(occupancy_width)] if occupancy_chunks > 1 else 0
        m.d.comb += [
            descriptors_w.addr.eq(index >> bus.chunk_bits(descriptor.size)),
            descriptors_w.data.eq(Cat(staged[:32 * (descriptor_chunks - 1)], host_bus.w_data)),
            descriptors_w.en.eq(writing & (region == bus.Region.DESCRIPTORS)
                                & (descriptor_chunk == descriptor_chunks - 1)),
            broadcast.occupancy_write.addr.eq(index >> bus.chunk_bits(occupancy_width)),
            broadcast.occupancy_write.data.eq(
                Cat(staged[:32 * (occupancy_chunks - 1)], host_bus.w_data)),
            broadcast.occupancy_write.en.eq(writing & (region == bus.Region.OCCUPANCY)
                                            & (occupancy_chunk == occupancy_chunks - 1)),
            codebook_w.addr.eq(index),
            codebook_w.data.eq(host_bus.w_data),
            codebook_w.en.eq(writing & (region == bus.Region.CODEBOOK)),
        ]
        per_pe_target = {bus.Region.ENTRIES: Target.ENTRIES, bus.Region.POINTERS: Target.POINTERS,
                         bus.Region.BIASES: Target.BIASES}
        target = Signal(Target)
        with m.Switch(region):
            for what, code in per_pe_target.items():
                with m.Case(what):
                    m.d.comb += target.eq(code)
        per_pe_region = Cat(region == what for what in per_pe_target).any()
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
            pe_write_refused.eq(busy),
            pe_write_target.eq(target),
            pe_write_addr.eq(index),
            pe_write_data.eq(host_bus.w_data),
        ]
        for k, pe in enumerate(processing_elements):
            m.d.comb += [
                pe.write.en.eq(pe_write_en[k]),
                pe.write.target.eq(pe_write_target),
                pe.write.addr.eq(pe_write_addr),
                pe.write.data.eq(pe_write_data),
            ]

        registers_write = host_bus.w_en & (region == bus.Region.REGISTERS)
        with m.If(registers_write & (index == bus.Register.LAYER_COUNT) & ~busy):
            m.d.sync += layer_count.eq(host_bus.w_data)
        bus_start = registers_write & (index == bus.Register.CONTROL) & host_bus.w_data[0]

        # ---- input stream: activations into the buffer, `last` starts the run -----------------
        input_count = Signal(range(config.max_features + 1))
        input_word = Signal.like(activations.addr)
        input_lane = Signal(range(max(2, pes)))
        stream_write = Signal()
        stream_start = Signal()
        if self._streams:
            m.d.comb += [
                self.input.ready.eq(~busy),
                stream_write.eq(self.input.valid & self.input.ready),
                stream_start.eq(stream_write & self.input.payload.last),
            ]
            with m.If(stream_write):
                with m.If(self.input.payload.last):
                    m.d.sync += [input_word.eq(0), input_lane.eq(0)]
                with m.Elif(input_lane == pes - 1):
                    m.d.sync += [input_word.eq(input_word + 1), input_lane.eq(0)]
                with m.Else():
                    m.d.sync += input_lane.eq(input_lane + 1)
                m.d.sync += input_count.eq(Mux(self.input.payload.last, 0, input_count + 1))
        # A request is registered before it starts the sequencer: the bus write and the stream's
        # `last` come from outside (behind a clock-domain crossing on a board), and their decode
        # would otherwise sit in one cycle with the sequencer's state machine.  `busy` covers the
        # cycle in between, so the host sees busy the cycle after its write, as before.
        m.d.sync += start.eq(~busy & (bus_start | stream_start))

        # ---- activation buffer: one access per cycle -------------------------------------------
        # Writes: the write-back (whole words), the input stream and the host (one lane each).
        # Reads: the broadcast unit (computing), the output stream (unloading), the host (idle).
        # ---- write-back: requantizers shared by groups of `period` PEs ------------------------
        period = config.writeback_period
        requantizers = []
        phase = Signal(range(max(2, period)))          # which PE of each group is served
        with m.If(processing_elements[0].readout.valid):
            m.d.sync += phase.eq(0 if period == 1 else phase + 1)
        with m.Else():
            m.d.sync += phase.eq(0)
        for group in range(pes // period):
            requantizer = Requantizer(config)
            m.submodules[f"requantizer{group}"] = requantizer
            members = processing_elements[group * period:(group + 1) * period]
            with m.Switch(phase):
                for offset, pe in enumerate(members):
                    with m.Case(offset):
                        m.d.comb += requantizer.i.payload.eq(pe.readout.payload)
            m.d.comb += [
                requantizer.i.valid.eq(members[0].readout.valid),
                requantizer.shift.eq(layer_shift),
                requantizer.relu.eq(layer_relu),
            ]
            requantizers.append(requantizer)
        m.d.comb += sequencer.results_valid.eq(requantizers[0].o.valid)
        # Every lane of a group gets its requantizer's output; the lane mask picks one.
        result_lanes = Cat((sequencer.result_write.phase == k % period) for k in range(pes))
        write_address = Signal.like(activations.addr)
        single_value = Signal(signed(config.act_bits))
        # Whether a lane is written: the OR of the three requests, not of the lane enables
        # (each a function of all three; the address multiplexer waits on it).
        activation_write = Signal()
        m.d.comb += activation_write.eq(sequencer.result_write.en | stream_write
                                        | (writing & (region == bus.Region.ACTIVATIONS)))
        with m.If(sequencer.result_write.en):
            m.d.comb += [write_address.eq(sequencer.result_write.addr),
                         activations.w_en.eq(result_lanes)]
        with m.Elif(stream_write):
            m.d.comb += [write_address.eq(input_word), activations.w_en.eq(1 << input_lane)]
        with m.Elif(writing & (region == bus.Region.ACTIVATIONS)):
            m.d.comb += [write_address.eq(index >> lane_bits),
                         activations.w_en.eq(1 << index[:max(1, lane_bits)])]
        # The single value written, outside the priority above: a result write does not use
        # it (the requantizers' outputs are chosen on `storing`), and the stream's value is
        # the one whenever it is offered (a host write then is refused or loses to it), so no
        # decision made far away (a result's arrival, the bus decode) waits in front of the
        # 256 bits of write data.
        if self._streams:
            m.d.comb += single_value.eq(Mux(self.input.valid, self.input.payload.value,
                                            host_bus.w_data[:config.act_bits]))
        else:
            m.d.comb += single_value.eq(host_bus.w_data[:config.act_bits])
        # Choose between a result and a single value once per requantizer, then fan out; on
        # a register (the word is 256 bits wide on the ECP5 build), not on the write enable.
        group_values = [Mux(sequencer.result_write.storing, requantizer.o.payload, single_value)
                        for requantizer in requantizers]
        m.d.comb += activations.w_data.eq(Cat(group_values[k // period] for k in range(pes)))

        # ---- output stream: the last layer's outputs after a run --------------------------------
        output_word = Signal.like(activations.addr)
        showing = Signal()
        output_read = Signal()          # the read of output_word was asked for last cycle
        if self._streams:
            output_count = Signal(range(config.max_features + 1))
            output_lane = Signal(range(max(2, pes)))
            m.d.sync += output_read.eq(unloading & ~showing & ~output_read & ~sequencer.done)
            with m.If(sequencer.done):
                m.d.sync += [unloading.eq(1), showing.eq(0), output_count.eq(0),
                             output_word.eq(0), output_lane.eq(0)]
            with m.Elif(output_read):
                m.d.sync += showing.eq(1)      # the word lands (ACTIVATION_LATENCY = 2)
            m.d.comb += [
                self.output.valid.eq(showing),
                self.output.payload.value.eq(activations.r_data[output_lane]),
                self.output.payload.last.eq(output_count + 1 == sequencer.layer.out_features),
            ]
            with m.If(self.output.valid & self.output.ready):
                m.d.sync += [showing.eq(0), output_count.eq(output_count + 1)]
                with m.If(self.output.payload.last):
                    m.d.sync += unloading.eq(0)
                with m.Elif(output_lane == pes - 1):
                    m.d.sync += [output_lane.eq(0), output_word.eq(output_word + 1)]
                with m.Else():
                    m.d.sync += output_lane.eq(output_lane + 1)

        # ---- activation buffer read port: broadcast, output stream, host ------------------------
        read_lane = Signal(range(max(2, pes)))
        read_address = Signal.like(activations.addr)
        with m.If(sequencer.busy):
            m.d.comb += [read_address.eq(broadcast.activations.addr),
                         activations.r_en.eq(broadcast.activations.en)]
        with m.Elif(unloading):
            m.d.comb += [read_address.eq(output_word),
                         activations.r_en.eq(~showing & ~output_read)]
        with m.Else():
            m.d.comb += [read_address.eq(index >> lane_bits), activations.r_en.eq(host_bus.r_en)]
        m.d.comb += [
            activations.addr.eq(Mux(activation_write, write_address, read_address)),
            broadcast.activations.data.eq(activations.r_data),
        ]

        # ---- host bus: reads, READ_LATENCY cycles after r_en ------------------------------------
        # First cycle: the memories read and the request is registered; second: registers and
        # cycle counters are selected (from the registered index); third: the activation
        # buffer's word has landed (late: it comes out of block RAM) and one of each four lanes
        # is picked; fourth: the lane, or the selected word, goes to r_data.
        read_region = Signal(bus.Region)
        read_index = Signal(3)
        read_pending = Signal()
        m.d.sync += [
            read_pending.eq(host_bus.r_en),
            read_region.eq(region),
            read_index.eq(index[:3]),
            read_lane.eq(index[:max(1, lane_bits)]),
        ]
        m.d.comb += cycles_r.addr.eq(index)
        register_value = Signal(32)
        with m.Switch(read_index):
            with m.Case(bus.Register.ID):
                m.d.comb += register_value.eq(bus.ENGINE_ID)
            with m.Case(bus.Register.CONFIG):
                m.d.comb += register_value.eq(pes | (config.act_bits << 8)
                                              | (config.code_bits << 16)
                                              | (config.scan_lanes << 24))
            with m.Case(bus.Register.CONTROL):
                m.d.comb += register_value.eq(Cat(busy, done))
            with m.Case(bus.Register.LAYER_COUNT):
                m.d.comb += register_value.eq(layer_count)
            with m.Case(bus.Register.TOTAL_CYCLES):
                m.d.comb += register_value.eq(sequencer.total_cycles)
            with m.Case(bus.Register.INPUT_COUNT):
                m.d.comb += register_value.eq(input_count)
            with m.Case(bus.Register.RUNS):
                m.d.comb += register_value.eq(runs)
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
                m.d.sync += selected.eq(cycles_r.data)
            with m.Default():
                m.d.sync += selected.eq(0)
        assert bus.READ_LATENCY == 4
        part_lanes = min(4, pes)
        parts = ceil_div(pes, part_lanes)
        lane_values = activations.r_data
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



def _flat(array):
    import numpy as np
    return np.asarray(array).reshape(-1)
