"""The sparse inference engine: broadcast unit, N processing elements, sequencer, host bus.

An EIE-style engine (Han et al., ISCA 2016) generated from an :class:`EngineConfig`:

* the activation buffer holds a layer's input, ``pes`` activations per word; the PEs' write-back
  overwrites it with the layer's output, one word per cycle (EIE's source and destination
  register files, merged: a layer's input is dead by the time its output is written);
* the broadcast unit scans it and queues each PE's work (``broadcast.py``);
* the PEs multiply and accumulate (``pe.py``) with the running layer's codebook
  (``codebook_registers.py``), the sequencer runs the layers (``sequencer.py``);
* the write-back requantizes the PEs' rows back into the buffer (``writeback_unit.py``);
* in conv mode (``config.conv``) the sequencer walks each layer's output positions, the
  broadcast unit reads each position's patch through its address generator, and the
  write-back's results pass the pooling registers (``pool_unit.py``) on their way to the
  layer's output map; the layers' geometry words are in a memory of their own;
* one user at a time has the buffer's port (``activation_ports.py``): the broadcast unit, the
  write-back, the streams (``input_stream.py``, ``output_stream.py``) or the host bus, whose
  writes and reads are decoded apart (``host_writes.py``, ``host_reads.py``).

Interfaces: ``input`` (a stream of activations; ``last`` starts the run), ``output`` (the last
layer's activations after a run), and ``bus`` (``bus.host_bus_signature``): memory writes, so
a new model of the same shape class loads without regenerating the engine, and reads of status,
activations and per-layer cycle counters.  Memories start from the program image when one is
given.
"""

from amaranth import Cat, Module, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig

from . import ram
from .activation_buffer import ActivationBuffer
from .activation_ports import ActivationPorts
from .broadcast import BroadcastUnit
from .codebook_registers import CodebookRegisters
from .geometry_loader import geometry_depth
from .host_reads import HostReadPath
from .host_writes import HostWriteDecoder
from .input_stream import InputStream
from .output_stream import OutputStream
from .pe import ProcessingElement
from .pool_unit import PoolUnit
from .sequencer import Sequencer
from .writeback_unit import WritebackUnit

__all__ = ["Engine"]


class Engine(wiring.Component):
    """The whole engine.

    Parameters
    ----------
    config : EngineConfig
    image : the program image to initialise the memories with (an object with ``entries``,
        ``pointers`` and ``biases`` per PE (and ``scales`` with ``config.multiplier_bits``),
        ``codebook``, ``occupancy``, ``descriptors`` and ``layer_count``), or None for empty
        memories that the host fills over the bus.
    streams : with the ``input`` and ``output`` streams (False: the host bus only, as on a board
        behind its UART link, where the streams would be dead logic).

    Members
    -------
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
        config, image = self._config, self._image

        # ---- components ---------------------------------------------------------------------
        m.submodules.sequencer = sequencer = Sequencer(config)
        m.submodules.broadcast = broadcast = BroadcastUnit(
            config, occupancy=None if image is None else image.occupancy)
        processing_elements = self._processing_elements(m)
        m.submodules.codebook_registers = codebook_registers = CodebookRegisters(config)
        m.submodules.writeback_unit = writeback_unit = WritebackUnit(
            config, scales=_scale_memories(config, image), tables=_table_words(config, image))
        m.submodules.host_writes = host_writes = HostWriteDecoder(
            config, layer_count=0 if image is None else int(image.layer_count))
        m.submodules.host_reads = host_reads = HostReadPath(config)
        m.submodules.activation_ports = activation_ports = ActivationPorts(config)
        m.submodules.activations = activations = ActivationBuffer(config)

        # ---- memories -----------------------------------------------------------------------
        descriptors, codebook, cycles = self._memories(m, platform)
        descriptors_r = ram.registered_read_port(m, descriptors, "descriptors_read")
        codebook_r = ram.registered_read_port(m, codebook, "codebook_read")
        cycles_w = cycles.write_port()
        descriptors_w = descriptors.write_port()
        m.d.comb += [descriptors_w.addr.eq(host_writes.descriptors.addr),
                     descriptors_w.en.eq(host_writes.descriptors.en),
                     descriptors_w.data.eq(_features_last(config, host_writes.descriptors.data))]
        wiring.connect(m, host_writes.codebook, codebook.write_port())
        wiring.connect(m, host_reads.cycles, cycles.read_port())
        wiring.connect(m, activation_ports.buffer, activations)

        busy = Signal()
        unloading = Signal()

        # ---- sequencer ----------------------------------------------------------------------
        m.d.comb += [
            sequencer.start.eq(host_writes.start),
            sequencer.layer_count.eq(host_writes.layer_count),
            descriptors_r.addr.eq(sequencer.descriptors.addr),
            sequencer.descriptors.data.eq(_features_first(config, descriptors_r.data)),
            codebook_r.addr.eq(sequencer.codebook.addr),
            sequencer.codebook.data.eq(codebook_r.data),
            broadcast.start.eq(sequencer.broadcast_start),
            broadcast.groups.eq(sequencer.layer.groups),
            broadcast.occupancy_base.eq(sequencer.layer.occupancy_base),
            broadcast.pointer_base.eq(sequencer.layer.pointer_base),
            sequencer.pes_busy.eq(Cat(pe.busy for pe in processing_elements).any()),

            busy.eq(sequencer.busy | unloading | host_writes.start),
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

        # ---- PEs: their queues, codebook, write-back and host writes ------------------------
        wiring.connect(m, sequencer.codebook_write, codebook_registers.write)
        m.d.comb += [writeback_unit.layer.eq(sequencer.layer),
                     writeback_unit.start.eq(sequencer.writeback),
                     sequencer.results_valid.eq(writeback_unit.results.valid)]
        for k, pe in enumerate(processing_elements):
            wiring.connect(m, broadcast.queues[k], pe.queue)
            m.d.comb += [broadcast.dequeued[k].eq(pe.dequeued),
                         pe.codebook.eq(codebook_registers.values)]
            wiring.connect(m, writeback_unit.schedules[k], pe.writeback)
            wiring.connect(m, pe.readout, writeback_unit.readouts[k])
            wiring.connect(m, host_writes.pe_writes[k], pe.write)
        if config.row_scales:
            for write, into in zip(host_writes.scale_writes, writeback_unit.scale_writes):
                wiring.connect(m, write, into)
        if config.table_slots:
            wiring.connect(m, host_writes.tables, writeback_unit.table_write)

        # ---- host bus -----------------------------------------------------------------------
        wiring.connect(m, host_writes.occupancy, broadcast.occupancy_write)
        if config.skip_zeros:
            # The nonzero map takes every write the activation buffer takes.
            m.d.comb += [broadcast.activation_write.addr.eq(activation_ports.buffer.addr),
                         broadcast.activation_write.w_en.eq(activation_ports.buffer.w_en),
                         broadcast.activation_write.w_data.eq(activation_ports.buffer.w_data)]
        m.d.comb += [
            host_writes.bus.addr.eq(self.bus.addr),
            host_writes.bus.w_data.eq(self.bus.w_data),
            host_writes.bus.w_en.eq(self.bus.w_en),
            host_writes.busy.eq(busy),
            host_writes.run_done.eq(sequencer.done),
            host_reads.bus.addr.eq(self.bus.addr),
            host_reads.bus.r_en.eq(self.bus.r_en),
            self.bus.r_data.eq(host_reads.bus.r_data),
            self.bus.r_valid.eq(host_reads.bus.r_valid),
            host_reads.busy.eq(busy),
            host_reads.done.eq(host_writes.done),
            host_reads.layer_count.eq(host_writes.layer_count),
            host_reads.total_cycles.eq(sequencer.total_cycles),
            host_reads.runs.eq(host_writes.runs),
        ]

        # ---- activation buffer: one access per cycle ------------------------------------------
        wiring.connect(m, sequencer.result_write, activation_ports.result)
        wiring.connect(m, broadcast.activations, activation_ports.broadcast)
        wiring.connect(m, host_writes.activation, activation_ports.host_write)
        wiring.connect(m, host_reads.activations, activation_ports.host_read)
        m.d.comb += [
            activation_ports.results.eq(writeback_unit.results.payload),
            activation_ports.computing.eq(sequencer.busy),
            activation_ports.unloading.eq(unloading),
        ]

        output_stream = None
        # ---- streams ------------------------------------------------------------------------
        if self._streams:
            m.submodules.input_stream = input_stream = InputStream(config)
            m.submodules.output_stream = output_stream = OutputStream(config)
            wiring.connect(m, wiring.flipped(self.input), input_stream.input)
            wiring.connect(m, input_stream.write, activation_ports.stream)
            wiring.connect(m, output_stream.output, wiring.flipped(self.output))
            wiring.connect(m, output_stream.read, activation_ports.unload)
            m.d.comb += [
                input_stream.busy.eq(busy),
                host_writes.stream_start.eq(input_stream.start),
                host_reads.input_count.eq(input_stream.count),
                output_stream.run_done.eq(sequencer.done),
                output_stream.out_features.eq(sequencer.layer.out_features),
                unloading.eq(output_stream.unloading),
            ]
        if config.conv:
            self._conv(m, sequencer, broadcast, writeback_unit, activation_ports, host_writes,
                       output_stream)
        return m

    def _conv(self, m, sequencer, broadcast, writeback_unit, activation_ports, host_writes,
              output_stream):
        """Conv mode's wiring: the geometry memory, the positions' patch origins to the
        broadcast unit, and the pooling registers between the write-back and the buffer (its
        results reach the buffer through them, not straight)."""
        config, image = self._config, self._image
        width = isa.geometry_layout(config).size
        init = []
        if image is not None:
            init = [0] * geometry_depth(config)
            for layer, word in enumerate(image.geometry):
                for c in range(bus.chunks_of(width)):
                    init[bus.chunk_index(layer, c, width)] = (int(word) >> (32 * c)) & 0xFFFFFFFF
        # Only the host writes it (hw/ram.py); a block RAM on an iCE40 too.
        m.submodules.geometry = geometry = memory.Memory(
            shape=bus.BUS_DATA_BITS, depth=geometry_depth(config), init=init,
            attrs={"ram_style": "block", **ram.ATTRIBUTES})
        geometry_r = ram.registered_read_port(m, geometry, "geometry_read")
        wiring.connect(m, host_writes.geometry, geometry.write_port())
        m.submodules.pool_unit = pool = PoolUnit(config)
        m.d.comb += [
            geometry_r.addr.eq(sequencer.geometry_memory.addr),
            sequencer.geometry_memory.data.eq(geometry_r.data),
            broadcast.geometry.eq(sequencer.geometry),
            broadcast.origin.row.eq(sequencer.origin.row),
            broadcast.origin.col.eq(sequencer.origin.col),
            broadcast.origin.addr.eq(sequencer.origin.addr),
            pool.results.eq(writeback_unit.results.payload),
            pool.valid.eq(writeback_unit.results.valid),
            pool.index.eq(sequencer.result_index),
            pool.first.eq(sequencer.window_first),
            activation_ports.results.eq(pool.pooled),
        ]
        if output_stream is not None:
            m.d.comb += output_stream.base.eq(sequencer.geometry.out_base)

    def _processing_elements(self, m):
        config, image = self._config, self._image
        processing_elements = []
        for k in range(config.pes):
            pe = ProcessingElement(
                config,
                entries=None if image is None else isa.entry_words(config, image, k),
                pointers=None if image is None else image.pointers[k],
                biases=None if image is None else image.biases[k])
            m.submodules[f"pe{k}"] = pe
            processing_elements.append(pe)
        return processing_elements

    def _memories(self, m, platform):
        """The memories of the layer descriptors, the codebooks and the cycle counters."""
        config, image = self._config, self._image
        # On an iCE40 the descriptors would take ~100 logic cells as flip-flops and a mux; the
        # part has block RAMs to spare once the activation buffer sits in SPRAM.
        # Only the host writes the descriptors and the codebook (hw/ram.py).
        small_part = ram.on_ice40(platform)
        m.submodules.descriptors = descriptors = memory.Memory(
            shape=isa.descriptor_layout(config).size, depth=config.max_layers,
            init=[] if image is None else [_features_last_int(config, int(d))
                                           for d in image.descriptors],
            attrs={"ram_style": "block", **ram.ATTRIBUTES} if small_part else ram.ATTRIBUTES)
        # Small enough that Yosys would build it from flip-flops; a block RAM is cheaper.
        m.submodules.codebook = codebook = memory.Memory(
            shape=signed(config.coef_bits), depth=config.max_layers * config.codebook_size,
            init=[] if image is None else [int(c) for c in _flat(image.codebook)],
            attrs={"ram_style": "block", **ram.ATTRIBUTES})
        m.submodules.cycles = cycles = memory.Memory(shape=32, depth=config.max_layers, init=[])
        return descriptors, codebook, cycles


# The descriptor memory keeps a descriptor's in_features and out_features (its lowest bits) at
# the top of its word: on a board nothing reads them (no activation streams), and Yosys drops
# a block RAM's unread 16-bit slices only when they are whole, from the top.  (With them at
# the bottom the digits engine's 38 bits read took four block RAMs instead of three.)

def _feature_bits(config: EngineConfig) -> int:
    return 2 * config.feature_bits


def _features_last(config: EngineConfig, word):
    low = _feature_bits(config)
    return Cat(word[low:], word[:low])


def _features_first(config: EngineConfig, stored):
    high = len(stored) - _feature_bits(config)
    return Cat(stored[high:], stored[:high])


def _features_last_int(config: EngineConfig, word: int) -> int:
    low = _feature_bits(config)
    return (word >> low) | ((word & ((1 << low) - 1)) << (isa.descriptor_layout(config).size
                                                          - low))


def _table_words(config: EngineConfig, image):
    """The image's activation tables, slot after slot (``2**act_bits`` words each)."""
    if not config.table_slots or image is None or image.tables is None:
        return None
    return [int(word) for word in image.tables.reshape(-1)]


def _scale_memories(config: EngineConfig, image):
    """Each requantizer's scale words (``config.multiplier_bits``): word ``row * period +
    phase`` is the image's scale word of PE ``group * period + phase`` for that bias index."""
    if not config.row_scales or image is None:
        return None
    period = config.writeback_period
    memories = []
    for group in range(config.pes // period):
        words = [0] * config.scale_depth
        for phase in range(period):
            for row, word in enumerate(image.scales[group * period + phase]):
                words[row * period + phase] = int(word)
        memories.append(words)
    return memories


def _flat(array):
    import numpy as np
    return np.asarray(array).reshape(-1)
