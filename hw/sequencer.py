"""The layer sequencer: runs the program's layers one after another and counts their cycles.

For each layer ``l < layer_count``:

1. FETCH: read descriptor ``l`` (one cycle) and hold it on ``layer`` for the whole layer.
2. LOAD: copy the layer's ``2**code_bits`` codebook values into every PE's codebook registers
   (one per cycle, as EIE loads its per-layer codebook into the PEs' lookup tables).
3. COMPUTE: start the broadcast unit; wait until it is idle and no PE is busy.
4. WRITEBACK: every PE reads, clears and requantizes its ``rows`` accumulators in lockstep; each
   cycle the N results form one word of the activation buffer (row ``r`` = activations
   ``r*N .. r*N+N-1``), which becomes the next layer's input.

A cycle counter per layer runs from FETCH to the last write-back word; the host reads them.
After reset the sequencer clears every accumulator (a write-back of ``max_rows`` rows whose
results are dropped), so a run interrupted by a reset leaves nothing behind.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .config import EngineConfig
from .requantize import LATENCY as REQUANTIZE_LATENCY

__all__ = ["Sequencer", "WRITEBACK_LATENCY"]

# Cycles from the WRITEBACK pulse to the first result: the PE's row counter starts (1), the
# accumulator and bias reads (1), then the requantizer.
WRITEBACK_LATENCY = 2 + REQUANTIZE_LATENCY


class Sequencer(wiring.Component):
    """Ports
    -----
    start : In; one-cycle pulse that starts a run of ``layer_count`` layers (ignored when busy).
    layer_count : In; layers to run.
    busy : Out; a run (or the clear after reset) is in progress.
    done : Out; one-cycle pulse at the end of a run.
    layer : Out(descriptor); the running layer's descriptor.
    descriptors, codebook : read ports of the descriptor and codebook memories.
    codebook_write : Out; writes the PEs' codebook registers.
    broadcast_start : Out; pulse.  broadcast_idle : In.
    pes_busy : In; any PE busy.
    writeback : Out; pulse to every PE.  results_valid : In; the PEs' write-back results.
    result_write : Out; ``en``/``addr``: write the PEs' results as activation word ``addr``.
    cycles_write : Out; ``en``/``addr``/``data``: record layer ``addr``'s cycle count.
    total_cycles : Out; cycles of the last run.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        descriptor = isa.descriptor_layout(config)
        layer_bits = ceil_log2(max(2, config.max_layers))
        codebook_addr_bits = ceil_log2(max(2, config.max_layers * config.codebook_size))
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
            "codebook": Out(wiring.Signature({
                "addr": Out(codebook_addr_bits),
                "data": In(signed(config.coef_bits)),
            })),
            "codebook_write": Out(wiring.Signature({
                "en": Out(1),
                "index": Out(config.code_bits),
                "value": Out(signed(config.coef_bits)),
            })),
            "broadcast_start": Out(1),
            "broadcast_idle": In(1),
            "pes_busy": In(1),
            "writeback": Out(1),
            "results_valid": In(1),
            "result_write": Out(wiring.Signature({
                "en": Out(1),
                "addr": Out(ceil_log2(max(2, config.act_words))),
            })),
            "cycles_write": Out(wiring.Signature({
                "en": Out(1),
                "addr": Out(layer_bits),
                "data": Out(32),
            })),
            "total_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        index = Signal.like(self.descriptors.addr)         # running layer
        layer_cycles = Signal(32)
        run_cycles = Signal(32)
        code = Signal(range(config.codebook_size + 1))
        written = Signal(range(max(config.max_rows, config.act_words) + 1))
        clearing = Signal()
        counting = Signal()

        m.d.comb += [
            self.descriptors.addr.eq(index),
            self.codebook.addr.eq((index << config.code_bits) | code),
            self.codebook_write.value.eq(self.codebook.data),
            self.result_write.addr.eq(written),
            self.cycles_write.addr.eq(index),
            self.cycles_write.data.eq(layer_cycles + 1),
            self.total_cycles.eq(run_cycles),
        ]
        with m.If(counting):
            m.d.sync += [layer_cycles.eq(layer_cycles + 1), run_cycles.eq(run_cycles + 1)]

        with m.FSM(init="CLEAR"):
            with m.State("CLEAR"):
                # After reset: a write-back of every accumulator row, results dropped.
                m.d.comb += [self.busy.eq(1), self.writeback.eq(~clearing)]
                m.d.sync += [clearing.eq(1), self.layer.rows.eq(config.max_rows)]
                with m.If(clearing & self.results_valid):
                    m.d.sync += written.eq(written + 1)
                    with m.If(written + 1 == config.max_rows):
                        m.next = "IDLE"

            with m.State("IDLE"):
                with m.If(self.start & (self.layer_count != 0)):
                    m.d.sync += [index.eq(0), layer_cycles.eq(0), run_cycles.eq(0),
                                 counting.eq(1)]
                    m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += code.eq(0)
                m.next = "FETCHED"

            with m.State("FETCHED"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [self.layer.eq(self.descriptors.data), code.eq(1)]
                m.next = "LOAD"

            with m.State("LOAD"):
                # The codebook read of `code - 1` was issued last cycle: write that register.
                m.d.comb += [
                    self.busy.eq(1),
                    self.codebook_write.en.eq(1),
                    self.codebook_write.index.eq(code - 1),
                ]
                m.d.sync += code.eq(code + 1)
                with m.If(code == config.codebook_size):
                    m.next = "COMPUTE"

            with m.State("COMPUTE"):
                m.d.comb += [self.busy.eq(1), self.broadcast_start.eq(1)]
                m.next = "DRAIN"

            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.broadcast_idle & ~self.pes_busy):
                    m.d.sync += written.eq(0)
                    m.next = "WRITEBACK"

            with m.State("WRITEBACK"):
                m.d.comb += [self.busy.eq(1), self.writeback.eq(1)]
                m.next = "STORE"

            with m.State("STORE"):
                m.d.comb += [self.busy.eq(1), self.result_write.en.eq(self.results_valid)]
                with m.If(self.results_valid):
                    m.d.sync += written.eq(written + 1)
                    with m.If(written + 1 == self.layer.rows):
                        m.d.comb += self.cycles_write.en.eq(1)
                        m.d.sync += [index.eq(index + 1), layer_cycles.eq(0)]
                        with m.If(index + 1 == self.layer_count):
                            m.d.comb += self.done.eq(1)
                            m.d.sync += counting.eq(0)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "FETCH"
        return m
