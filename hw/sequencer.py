"""The layer sequencer: runs the program's layers one after another and counts their cycles.

For each layer ``l < layer_count``:

1. FETCH: read descriptor ``l`` (one cycle) and hold it on ``layer`` for the whole layer.
2. LOAD: the layer's ``2**code_bits`` codebook values go into the codebook registers the PEs
   read (one per cycle, as EIE loads its per-layer codebook into the PEs' lookup tables).  For
   every layer but the first this happens during the previous layer's write-back, so LOAD
   costs nothing then.  An engine with ``decoded_weights`` (codebook values in the PEs' entry
   memories) has no codebook to load: LOAD never happens.
3. COMPUTE: start the broadcast unit; wait until it is idle and no PE is busy.
4. WRITEBACK: every PE reads and clears its ``rows`` accumulators in lockstep, one row per
   ``period`` cycles; the shared requantizers turn them into activations, one lane of each
   group per cycle, so row ``r`` (activations ``r*N .. r*N+N-1``) is written in ``period``
   lane-masked writes; it becomes the next layer's input.

In conv mode (``config.conv``) a layer's geometry word loads from FETCH beside its codebook
(``geometry_loader.py``), and COMPUTE to STORE repeat for every output position the position
walker gives (``position_walker.py``): each position's patch origin goes to the broadcast
unit, its write-back goes through the pooling registers, and only a pooling window's last
position writes the output map (at the window's pooled pixel, ``rows`` words a pixel).  The
next layer's codebook preloads during the last position's write-back.

One cycle counter runs from the first FETCH to the last write-back word; its value at the end
of each layer is recorded, so layer ``l`` took ``end[l] - end[l-1]`` cycles (the host takes the
differences: one counter instead of two).
After reset the sequencer clears every accumulator (a write-back of ``max_rows`` rows whose
results are dropped), so a run interrupted by a reset leaves nothing behind.
"""

from types import SimpleNamespace

from amaranth import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .codebook_loader import CodebookLoader, codebook_read_signature, codebook_write_signature
from .geometry_loader import GeometryLoader, geometry_read_signature
from .patch_walker import patch_origin_signature
from .position_walker import PositionWalker
from .requantize import latency as requantize_latency

__all__ = ["Sequencer", "writeback_latency"]


def writeback_latency(config: EngineConfig) -> int:
    """Cycles from the WRITEBACK pulse to the first result: the PE starts reading (1), the
    accumulator and bias reads land and are shown to the shared requantizer (1; with
    ``config.link_registers`` 2, through the PE's readout registers), then the requantizer."""
    return 2 + config.link_registers + requantize_latency(config)


class Sequencer(wiring.Component):
    """Run a program's layers one after another and record their cycle counts.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    start : In; one-cycle pulse that starts a run of ``layer_count`` layers (ignored when busy).
    layer_count : In; layers to run.
    busy : Out; a run (or the clear after reset) is in progress.
    done : Out; one-cycle pulse at the end of a run.
    layer : Out(descriptor); the running layer's descriptor.
    descriptors, codebook : read ports of the descriptor and codebook memories (``data`` a
        cycle after ``addr``).
    codebook_write : Out; writes the PEs' codebook registers (``codebook_loader.py``).
    broadcast_start : Out; pulse.  broadcast_idle : In.
    pes_busy : In; any PE busy.
    writeback : Out; pulse to every PE (from a flip-flop).  results_valid : In; the PEs'
        write-back results.
    result_write : Out; ``en``/``addr``/``phase``: write the requantizers' results into lanes
        ``g * period + phase`` of activation word ``addr``; ``storing``: a register, high while
        the results of a layer are being written (``en`` may be high only then).
    cycles_write : Out; ``en``/``addr``/``data``: record the run's cycle count at the end of
        layer ``addr``.
    total_cycles : Out; cycles of the last run.
    geometry_memory : Out (conv mode); the geometry memory's read port.
    geometry : Out(``isa.geometry_layout``) (conv mode); the running layer's walk.
    origin : Out(``patch_walker.patch_origin_signature``) (conv mode); the position's patch
        origin.
    window_first : Out (conv mode); the position opens its pooling window.
    result_index : Out (conv mode); the place of the result on ``results_valid`` in the
        position's write-back (for the pooling registers).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        descriptor = isa.descriptor_layout(config)
        layer_bits = ceil_log2(max(2, config.max_layers))
        super().__init__({
            "start": In(1),
            "layer_count": In(range(config.max_layers + 1)),
            "busy": Out(1),
            "done": Out(1),
            "layer": Out(descriptor),
            "descriptors": Out(wiring.Signature({
                "addr": Out(layer_bits),
                "data": In(descriptor),
            })),
            "codebook": Out(codebook_read_signature(config)),
            "codebook_write": Out(codebook_write_signature(config)),
            "broadcast_start": Out(1),
            "broadcast_idle": In(1),
            "pes_busy": In(1),
            "writeback": Out(1),
            "results_valid": In(1),
            "result_write": Out(wiring.Signature({
                "en": Out(1),
                "addr": Out(ceil_log2(max(2, config.act_words))),
                "phase": Out(range(max(2, config.writeback_period))),
                "storing": Out(1),
            })),
            "cycles_write": Out(wiring.Signature({
                "en": Out(1),
                "addr": Out(layer_bits),
                "data": Out(32),
            })),
            "total_cycles": Out(32),
            **({"geometry_memory": Out(geometry_read_signature(config)),
                "geometry": Out(isa.geometry_layout(config)),
                "origin": Out(patch_origin_signature(config)),
                "window_first": Out(1),
                "result_index": Out(range(max(2, config.max_rows * config.writeback_period)))}
               if config.conv else {}),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        period_bits = (config.writeback_period - 1).bit_length()

        index = Signal.like(self.descriptors.addr)         # running layer
        run_cycles = Signal(32)
        written = Signal(range((max(config.max_rows, config.act_words) << period_bits) + 1))
        clearing = Signal()
        settled = Signal()          # in DRAIN: the broadcast unit and the PEs were idle
        counting = Signal()
        # Decided while the layer computes: the last result's index (after reset, CLEAR's) and
        # whether this is the run's last layer.  `final` is `written == last_result`, kept in
        # a flip-flop as the count moves (as `written == before_last`: no incrementer in front
        # of the comparator), so the end-of-layer decision does not wait on a comparator.
        clear_last = (config.max_rows << period_bits) - 1
        last_result = Signal.like(written, init=clear_last)
        before_last = Signal(range(-1, 1 << len(written)), init=clear_last - 1)
        final = Signal(init=clear_last == 0)
        last_layer = Signal()

        load_start, load_layer, loading, loaded_layer, loaded_valid, have_codebook = (
            self._codebook_loader(m, index))
        conv = self._conv(m, index, written)
        have_codebook = conv.ready(have_codebook)

        m.d.comb += [
            self.descriptors.addr.eq(index),
            self.result_write.phase.eq(written[:period_bits] if period_bits else 0),
            self.cycles_write.addr.eq(index),
            self.cycles_write.data.eq(run_cycles + 1),
            self.total_cycles.eq(run_cycles),
            # The running layer's descriptor is the descriptor memory's read data: its address
            # is the layer index, which only moves between layers (no copy in registers).
            self.layer.eq(self.descriptors.data),
        ]
        with m.If(counting):
            m.d.sync += run_cycles.eq(run_cycles + 1)

        # The write-back pulse is a flip-flop, high in the first cycle after reset (CLEAR's
        # write-back) and in each cycle of WRITEBACK: it starts the write-back schedules, spread
        # over the die, and a decode of the state machine in front would share their cycle.
        writeback = Signal(init=1)
        m.d.sync += writeback.eq(0)
        m.d.comb += self.writeback.eq(writeback)

        # Every result is counted, in whichever state: results come only in CLEAR and STORE,
        # and a decode of the state machine in front of the counter's enable was the UP5K's
        # critical path.  (The state machine's resets of the count come after, and win.)
        with m.If(self.results_valid):
            m.d.sync += [written.eq(written + 1), final.eq(written == before_last)]
        # `busy` is a flip-flop, high in every state but IDLE (set and cleared with the moves
        # into and out of it): the host bus's write decode and the engine's status wait on it.
        busy = Signal(init=1)
        m.d.comb += self.busy.eq(busy)
        # `storing` is high exactly in STORE (set on entering it, cleared on leaving);
        # `result_write`'s address and enable are `conv`'s.

        # The broadcast unit's start pulse is a flip-flop, high exactly in COMPUTE (set on the
        # move into it; COMPUTE lasts one cycle): it starts the scan's registers, and a decode
        # of the state machine in front of them was the UP5K's critical path.
        broadcast_start = Signal()
        m.d.sync += broadcast_start.eq(0)
        m.d.comb += self.broadcast_start.eq(broadcast_start)

        with m.FSM(init="CLEAR"):
            with m.State("CLEAR"):
                # After reset: a write-back of every accumulator row, results dropped.
                m.d.comb += self.layer.rows.eq(config.max_rows)
                m.d.sync += clearing.eq(1)
                with m.If(clearing & self.results_valid):
                    with m.If(final):
                        m.d.sync += [written.eq(0), busy.eq(0)]
                        m.next = "IDLE"

            with m.State("IDLE"):
                with m.If(self.start & (self.layer_count != 0)):
                    m.d.sync += [index.eq(0), run_cycles.eq(0), counting.eq(1),
                                 loaded_valid.eq(0), busy.eq(1)]
                    m.next = "FETCH"

            with m.State("FETCH"):
                if config.conv:
                    m.d.comb += conv.start.eq(1)
                with m.If(~(loaded_valid & (loaded_layer == index)) & ~loading):
                    m.d.comb += [load_start.eq(1), load_layer.eq(index)]
                m.next = "FETCHED"

            with m.State("FETCHED"):
                # The descriptor read of the new index lands this cycle.
                with m.If(have_codebook):
                    m.d.sync += broadcast_start.eq(1)
                    m.next = "COMPUTE"
                with m.Else():
                    m.next = "LOAD"

            with m.State("LOAD"):
                with m.If(~loading & ~(loaded_valid & (loaded_layer == index))):
                    # A preload for this layer never started (or loaded another): start it.
                    m.d.comb += [load_start.eq(1), load_layer.eq(index)]
                with m.If(have_codebook):
                    m.d.sync += broadcast_start.eq(1)
                    m.next = "COMPUTE"

            with m.State("COMPUTE"):
                m.d.sync += [last_result.eq((self.layer.rows << period_bits) - 1),
                             before_last.eq((self.layer.rows << period_bits) - 2),
                             last_layer.eq(index + 1 == self.layer_count)]
                m.next = "DRAIN"

            with m.State("DRAIN"):
                # The engine's idle state, seen a cycle late through `settled`: the OR of every
                # PE's pipeline gathered across the die then ends in one flip-flop, not in this
                # state machine's decisions.  It is only taken in DRAIN, so the cycle of
                # COMPUTE, when the broadcast unit has not started yet, never counts as idle.
                m.d.sync += settled.eq(self.broadcast_idle & ~self.pes_busy)
                with m.If(settled):
                    m.d.sync += [written.eq(0), final.eq(last_result == 0), settled.eq(0),
                                 writeback.eq(1)]
                    m.next = "WRITEBACK"

            with m.State("WRITEBACK"):
                m.d.sync += self.result_write.storing.eq(1)
                with m.If(~last_layer & ~loading & conv.final if config.conv
                          else ~last_layer & ~loading):
                    m.d.comb += [load_start.eq(1), load_layer.eq(index + 1)]
                m.next = "STORE"

            with m.State("STORE"):
                with m.If(self.results_valid):
                    if config.conv:
                        with m.If(final & ~conv.final):
                            # The layer's next position.
                            m.d.comb += conv.advance.eq(1)
                            m.d.sync += [self.result_write.storing.eq(0),
                                         broadcast_start.eq(1)]
                            m.next = "COMPUTE"
                    with (m.Elif if config.conv else m.If)(final):
                        m.d.comb += self.cycles_write.en.eq(1)
                        m.d.sync += self.result_write.storing.eq(0)
                        with m.If(last_layer):
                            # The last layer's descriptor stays on `layer` (its out_features).
                            m.d.comb += self.done.eq(1)
                            m.d.sync += [counting.eq(0), busy.eq(0)]
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += index.eq(index + 1)
                            m.next = "FETCH"
        return m

    def _codebook_loader(self, m, index):
        """The codebook loader runs beside the FSM, so that the next layer's codebook loads
        during this layer's write-back, when no PE reads the registers.  With
        ``config.decoded_weights`` the PEs' entries hold codebook values and nothing reads
        the registers: there is no loader, and every layer has its codebook."""
        config = self._config
        if config.decoded_weights:
            return Signal(), Signal.like(index), Const(0), Signal.like(index), Signal(), Const(1)
        m.submodules.codebook_loader = loader = CodebookLoader(config)
        wiring.connect(m, loader.codebook, wiring.flipped(self.codebook))
        wiring.connect(m, loader.codebook_write, wiring.flipped(self.codebook_write))
        load_start, load_layer, loading = loader.start, loader.layer, loader.loading
        # The layer whose codebook the registers hold (none while one loads, nor after a run's
        # start: the host may have written the codebook memory since).
        loaded_layer = Signal.like(index)
        loaded_valid = Signal()
        with m.If(load_start):
            m.d.sync += loaded_valid.eq(0)
        with m.Elif(loading):
            with m.If(loader.finishing):
                m.d.sync += [loaded_layer.eq(loader.target), loaded_valid.eq(1)]
        have_codebook = loaded_valid & (loaded_layer == index) & ~load_start
        return load_start, load_layer, loading, loaded_layer, loaded_valid, have_codebook

    def _conv(self, m, index, written) -> SimpleNamespace:
        """Conv mode's geometry loader and position walker, and what the FSM asks of them:
        ``start`` (FETCH: load the layer's geometry) and ``advance`` (to the next position),
        both driven by the FSM; ``final`` (the layer's last position) and ``ready(have)``
        (the codebook ``have`` and the geometry are loaded).  It drives ``result_write``'s
        address and enable.  Without conv mode, the Linear-only engine's: results at word
        ``written / period``, the two pulses undriven, ``ready`` the codebook's."""
        config = self._config
        start, advance = Signal(), Signal()
        period_bits = (config.writeback_period - 1).bit_length()
        write = self.result_write.storing & self.results_valid
        if not config.conv:
            m.d.comb += [self.result_write.addr.eq(written >> period_bits),
                         self.result_write.en.eq(write)]
            return SimpleNamespace(start=start, advance=advance, ready=lambda ready: ready)
        m.submodules.geometry_loader = loader = GeometryLoader(config)
        m.submodules.position_walker = walker = PositionWalker(config)
        wiring.connect(m, loader.memory, wiring.flipped(self.geometry_memory))
        # The walker starts over the cycle the geometry is first there, so that it is at the
        # layer's first position by COMPUTE (the FSM moves on a loaded geometry no earlier).
        was_loaded = Signal()
        m.d.sync += was_loaded.eq(loader.loaded)
        m.d.comb += [
            loader.start.eq(start), loader.layer.eq(index),
            self.geometry.eq(loader.geometry),
            walker.geometry.eq(loader.geometry), walker.rows.eq(self.layer.rows),
            walker.restart.eq(loader.loaded & ~was_loaded), walker.advance.eq(advance),
            self.origin.row.eq(walker.row), self.origin.col.eq(walker.col),
            self.origin.addr.eq(walker.addr),
            self.window_first.eq(walker.first),
            self.result_index.eq(written[:len(self.result_index)]),
            # A window's results go to its pooled pixel's words, once it is whole.
            self.result_write.addr.eq((written >> period_bits) + walker.out_word),
            self.result_write.en.eq(write & walker.last),
        ]
        return SimpleNamespace(start=start, advance=advance, final=walker.final,
                               ready=lambda ready: ready & loader.loaded)
