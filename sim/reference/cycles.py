"""The cycle model: how many clock cycles the engine takes for a layer, and why.

Two yardsticks from DESIGN.md are computed from the same work counts: for a layer and an input,
``E_k`` is the number of entries (padding included) PE ``k`` must process for the nonzero input
activations; the physical limit is ``ceil(sum_k E_k / N)`` (perfect balance) and a queue-based
engine cannot beat ``max_k E_k``.

The prediction mirrors the RTL's register transfers cycle by cycle (broadcast unit, each PE's
activation queue, LNZD front end, pointer read, column queue, entry walker, MAC pipeline), so
it can be checked against RTL simulation instead of being fitted to it.  Around the compute
phase the sequencer adds cycles that depend only on the configuration and the layer's shape
(:func:`sequencer_overhead`):

====================  ==========================================================
FETCH, FETCHED        2 cycles (descriptor read)
LOAD                  ``2**code_bits + 1`` cycles for a run's first layer; for the others
                      what is left of the load that ran during the previous write-back
COMPUTE               1 cycle (starts the broadcast unit)
DRAIN                 the compute phase: queues fill and drain (simulated)
WRITEBACK + STORE     ``1 + rows * period + writeback_latency - 1`` cycles
====================  ==========================================================

In conv mode (``config.conv``) a layer walks its output positions: FETCH and FETCHED, then a
wait for the codebook and for the layer's geometry word (loaded from FETCH, a 32-bit chunk a
cycle: ``chunks + 1`` cycles), then per position COMPUTE (1), DRAIN (the patch's compute phase,
simulated as a layer's with the patch as its input), WRITEBACK and STORE (as a layer's: every
position's accumulators are written back, to the pooling registers, and a pooling window's last
position writes the window's largest values into the output map).  The next position starts
from STORE without FETCH (:func:`conv_layer_timing`).

and the compute phase holds, beside the PEs' entries, the pipeline's fill and drain: the
cycles from the broadcast unit's start to the first product and from the last entry to the
sequencer seeing the engine idle (``PIPELINE_FILL``), also fixed.  The two together are the
per-layer overhead the model states (:func:`fixed_overhead`), the one DESIGN.md's target adds
to ``max_k E_k``.  The compute phase cannot end before the broadcast unit has scanned
``ceil(in / scan_lanes)`` groups either: a scan floor that depends on the shape only, and that
stays below ``max_k E_k`` when each group brings the PEs more than a cycle of work.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.numerics import ceil_div
from sparseforge.hw.broadcast import buffer_depth
from sparseforge.hw.pe import COLUMN_QUEUE_DEPTH
from sparseforge.hw.sequencer import writeback_latency

__all__ = ["LayerTiming", "simulate_compute", "sequencer_overhead", "fixed_overhead",
           "layer_timing", "PIPELINE_FILL", "pipeline_fill", "geometry_load_cycles",
           "conv_prologue", "position_overhead", "conv_layer_timing", "program_timings"]

# From the broadcast unit's start to the first product written, when nothing waits: fetch
# (the activation buffer answers two cycles later), land, mask, the buffer's memory and output
# register (6), queue read (1), column word read (1), entry read, decode, multiply, accumulate
# (4); and two cycles for the sequencer to see the engine idle (through a register).
PIPELINE_FILL = 14


def pipeline_fill(config: EngineConfig) -> int:
    """``PIPELINE_FILL`` for this configuration: a cycle more with the column queue (the first
    column word waits in it), four more with link registers (the masked group is registered
    before the broadcast unit's buffer, the first group reaches its PE two cycles later, and
    the sequencer sees the engine idle a cycle later)."""
    return PIPELINE_FILL + config.column_queue + 4 * config.link_registers


@dataclass(frozen=True)
class LayerTiming:
    """Cycles of one layer for one input, with the cost model's yardsticks."""
    cycles: int               # predicted cycles, FETCH to the last write-back word
    compute: int              # of which the compute phase (DRAIN state)
    overhead: int             # of which fixed: sequencer steps and pipeline fill (fixed_overhead)
    work: np.ndarray          # E_k per PE
    limit: int                # ceil(sum_k E_k / N)
    bound: int                # max_k E_k
    nonzero_inputs: int

    @property
    def efficiency(self) -> float:
        """Load-balance efficiency: (sum_k E_k / N) over the measured or predicted cycles."""
        return float(self.work.sum()) / len(self.work) / self.cycles if self.cycles else 0.0


def fixed_overhead(config: EngineConfig, out_features: int,
                   previous_out_features: int | None = None) -> int:
    """The per-layer overhead the cycle model states: the sequencer's steps around the compute
    phase (:func:`sequencer_overhead`) and the pipeline's fill and drain (:func:`pipeline_fill`)."""
    return sequencer_overhead(config, out_features, previous_out_features) + pipeline_fill(config)


def sequencer_overhead(config: EngineConfig, out_features: int,
                       previous_out_features: int | None = None) -> int:
    """Cycles of a layer outside its compute phase: fetching the descriptor, waiting for the
    codebook, starting, and the write-back of ``rows * period`` results.

    The first layer of a run waits for its whole codebook load (``2**code_bits + 1`` cycles);
    the others' codebooks load during the previous layer's write-back, which started
    ``previous rows * period + writeback_latency + 1`` cycles before this layer's FETCHED.
    With ``decoded_weights`` there is no codebook to load.
    """
    period = config.writeback_period
    rows = ceil_div(out_features, config.pes)
    previous_rows = (None if previous_out_features is None
                     else ceil_div(previous_out_features, config.pes))
    load = codebook_wait(config, previous_rows)
    return 2 + load + 1 + 1 + rows * period + writeback_latency(config) - 1


def codebook_wait(config: EngineConfig, previous_rows: int | None) -> int:
    """Cycles a layer waits after FETCHED for its codebook: the whole load (``2**code_bits +
    1``) for a run's first layer, what is left of it for the others (it started at the
    previous layer's write-back, ``previous_rows * period + writeback_latency + 1`` cycles
    before), none with ``decoded_weights``."""
    load_cycles = config.codebook_size + 1
    if config.decoded_weights:
        return 0
    if previous_rows is None:
        return load_cycles
    head_start = previous_rows * config.writeback_period + writeback_latency(config) + 1
    return max(0, load_cycles + 1 - head_start)


def simulate_compute(config: EngineConfig, counts: np.ndarray, active: np.ndarray) -> int:
    """Cycles the sequencer spends in DRAIN for one layer and one input.

    ``counts`` (pes x in): entries of each PE's column, padding included; ``active`` (in,):
    which input activations are nonzero.  Mirrors hw/broadcast.py and hw/pe.py register for
    register; see the comments there for the meaning of each step.
    """
    pes, lanes = config.pes, config.scan_lanes
    in_features = counts.shape[1]
    groups = ceil_div(in_features, lanes)
    padded = np.zeros((pes, groups * lanes), dtype=np.int64)
    padded[:, :in_features] = np.where(active[None, :], counts, 0)
    # work[g][k]: the entry counts of the lanes of group g that PE k has work for, lane order.
    per_group = padded.reshape(pes, groups, lanes)
    work = [[tuple(int(c) for c in per_group[k, g] if c) for k in range(pes)]
            for g in range(groups)]

    running, next_group = True, 0
    skip = _ZeroSkip(config, active) if config.skip_zeros else None
    asked: int | None = None                    # the group the activation buffer took
    in_flight: int | None = None                # the group whose words land this cycle
    landed: int | None = None                   # the group being masked this cycle
    masked: int | None = None                   # masked, on its way into the buffer
                                                # (config.link_registers)
    depth = buffer_depth(config)
    popped_last = False                         # a pop the room counter has not seen yet
    buffer: deque[int] = deque()                # groups in the buffer's memory
    head: int | None = None                     # the group in the buffer's output register
    taken: set[int] = set()                     # PEs that took the buffer's head already
    queues = [deque() for _ in range(pes)]
    fronts: list[list[int] | None] = [None] * pes
    fetched: list[int | None] = [None] * pes    # the column word in the memory's output
    columns = [deque() for _ in range(pes)]     # the column queues (config.column_queue)
    walking = [0] * pes                         # entries left of a column being walked
    pipes = [[False, False, False] for _ in range(pes)]
    # The unit's count of each queue's free entries, the groups on their way to the queues
    # and the dequeues on their way back (config.link_registers: two cycles each way).
    credits = [config.fifo_depth] * pes
    links: list[tuple | None] = [None] * pes          # first link register
    fars: list[tuple | None] = [None] * pes           # second link register
    returning = [False] * pes                   # a dequeue in the PE's register
    returned_late = [False] * pes               # and in the broadcast unit's
    linked = config.link_registers

    cycle = 0
    while True:
        cycle += 1
        broadcast_idle = (not running and asked is None and in_flight is None
                          and landed is None and masked is None and not buffer
                          and head is None
                          and not any(link is not None for link in links + fars))
        if broadcast_idle and not any(
                queues[k] or fronts[k] is not None or fetched[k] is not None or walking[k]
                or columns[k]
                or any(pipes[k]) for k in range(pes)):
            # The sequencer sees it a cycle later (`settled`); with link_registers, two (the
            # PEs' busy flags come through a register, and the unit's idle is delayed to match).
            return cycle + 1 + linked

        # ---- broadcast unit (combinational view of this cycle) ----
        room = (len(buffer) + (head is not None) + (asked is not None)
                + (in_flight is not None) + (landed is not None) + (masked is not None)
                + popped_last < depth)
        if skip is None:
            fetch = running and next_group != groups and room
        else:
            fetch = running and skip.can_ask and room
        accepted: list[int] = []
        refused = False
        if head is not None:
            for k in range(pes):
                if work[head][k] and k not in taken:
                    if credits[k]:
                        accepted.append(k)
                    else:
                        refused = True

        # ---- PEs ----
        dequeued = [False] * pes
        for k in range(pes):
            if config.column_queue:
                # The walker takes the queue's head; the memory's output moves into the queue
                # while it has room (both decided on the queue's level at the cycle's start).
                take = bool(columns[k]) and not walking[k]
                move = fetched[k] is not None and len(columns[k]) < COLUMN_QUEUE_DEPTH
                ready_for_issue = move or fetched[k] is None
                taken_column = columns[k][0] if take else None
            else:
                take = fetched[k] is not None and not walking[k]
                move = False
                ready_for_issue = take or fetched[k] is None
                taken_column = fetched[k]
            if lanes == 1:
                # No front-end register: the PE issues straight from its queue's head.
                front = list(queues[k][0]) if queues[k] else None
                issue = front is not None and ready_for_issue
                last_lane = take_group = False
            else:
                front = fronts[k]
                issue = front is not None and ready_for_issue
                last_lane = issue and len(front) == 1
                take_group = bool(queues[k]) and (front is None or last_lane)
            left = walking[k] if walking[k] else (taken_column if take else 0)
            read = left > 0
            # state updates, as the registers take them
            pipes[k] = [read, pipes[k][0], pipes[k][1]]
            if read:
                walking[k] = left - 1
            if config.column_queue:
                if take:
                    columns[k].popleft()
                if move:
                    columns[k].append(fetched[k])
            if issue:
                fetched[k] = front[0]
                if lanes == 1:
                    queues[k].popleft()
                    dequeued[k] = True
            elif take and not config.column_queue or move:
                fetched[k] = None
            if lanes == 1:
                pass
            elif take_group:
                fronts[k] = list(queues[k].popleft())
                dequeued[k] = True
            elif last_lane:
                fronts[k] = None
            elif issue:
                fronts[k] = front[1:]

        for k in range(pes):
            returned = returned_late[k] if linked else dequeued[k]
            credits[k] += returned - (k in accepted)
            returned_late[k] = returning[k]
            returning[k] = dequeued[k]
            if linked and fars[k] is not None:
                queues[k].append(fars[k])
            fars[k] = links[k]
            links[k] = None
        popped = False
        if head is not None:
            for k in accepted:
                if linked:
                    links[k] = work[head][k]
                else:
                    queues[k].append(work[head][k])
            if refused:
                taken |= set(accepted)
            else:
                popped = True
                taken = set()
        # The buffer (hw/pingpong_fifo.py, SyncFIFOBuffered's timing): the next group is at
        # its output the cycle after the head leaves or, when it was empty, after it arrived.
        if buffer and (head is None or popped):
            head = buffer.popleft()
        elif popped:
            head = None
        popped_last = popped
        if linked:
            if masked is not None:
                buffer.append(masked)
            masked = landed
        elif landed is not None:
            buffer.append(landed)
        landed = in_flight
        in_flight = asked
        if skip is not None:
            if not fetch and skip.done:
                running = False
            asked = skip.step(fetch) if running or fetch else None
            continue
        asked = next_group if fetch else None
        if fetch:
            next_group += 1
        elif next_group == groups:
            running = False


class _ZeroSkip:
    """The fetch stage's walk with ``skip_zeros`` (hw/broadcast_fetch.py): the nonzero map's
    words come through its read register (the slot) into ``flags``, the lanes of the current
    word not asked for yet; a group is asked for each of them, lowest first, and the next
    word is taken when the current one has none left."""

    def __init__(self, config: EngineConfig, active: np.ndarray):
        lanes = config.pes
        padded = np.zeros(ceil_div(len(active), lanes) * lanes, bool)
        padded[:len(active)] = active
        self.words = [list(np.flatnonzero(word)) for word in padded.reshape(-1, lanes)]
        self.lanes = lanes
        self.next_read = 0                      # the next map word to read
        self.slot: int | None = None            # the word in the map's read register
        self.word: int | None = None            # the word in `flags`
        self.flags: list[int] = []

    @property
    def can_ask(self) -> bool:
        return bool(self.flags)

    @property
    def done(self) -> bool:
        return self.next_read == len(self.words) and self.slot is None and not self.flags

    def step(self, ask: bool) -> int | None:
        """One clock edge; the group asked for this cycle, if ``ask``."""
        group = self.word * self.lanes + self.flags[0] if ask else None
        left = self.flags[1:] if ask else self.flags
        take = not left and self.slot is not None
        read = self.next_read < len(self.words) and (self.slot is None or take)
        if take:
            self.word, self.flags = self.slot, list(self.words[self.slot])
        else:
            self.flags = left
        if read:
            self.slot = self.next_read
            self.next_read += 1
        elif take:
            self.slot = None
        return group


def layer_timing(config: EngineConfig, counts: np.ndarray, active: np.ndarray,
                 out_features: int, previous_out_features: int | None = None) -> LayerTiming:
    """Predicted cycles and the cost model's yardsticks for one layer and one input
    (``previous_out_features``: the width of the layer before it in the run, if any)."""
    work = (counts * active[None, :]).sum(axis=1)
    compute = simulate_compute(config, counts, active)
    return LayerTiming(
        cycles=sequencer_overhead(config, out_features, previous_out_features) + compute,
        compute=compute, overhead=fixed_overhead(config, out_features, previous_out_features),
        work=work,
        limit=int(ceil_div(int(work.sum()), config.pes)), bound=int(work.max()),
        nonzero_inputs=int(np.count_nonzero(active)))


# ---- conv mode ------------------------------------------------------------------------------

def geometry_load_cycles(config: EngineConfig) -> int:
    """Cycles from FETCH until a layer's geometry word is in its registers: a 32-bit chunk a
    cycle, the memory answering a cycle after it is asked (as the codebook loader's)."""
    return bus.chunks_of(isa.geometry_layout(config).size) + 1


def conv_prologue(config: EngineConfig, previous_rows: int | None) -> int:
    """Cycles of a conv-mode layer before its first position: FETCH, FETCHED and the wait for
    the codebook (loaded during the previous layer's last write-back, as a Linear engine's
    next layer's is; none with ``decoded_weights``) and the geometry word (loaded from
    FETCH)."""
    return 2 + max(codebook_wait(config, previous_rows), geometry_load_cycles(config))


def position_overhead(config: EngineConfig, rows: int) -> int:
    """A position's cycles outside its compute phase: COMPUTE, WRITEBACK and STORE (the
    write-back of ``rows * period`` results)."""
    return 1 + 1 + rows * config.writeback_period + writeback_latency(config) - 1


def conv_layer_timing(config: EngineConfig, counts: np.ndarray, patches: np.ndarray,
                      rows: int, previous_rows: int | None) -> LayerTiming:
    """Predicted cycles of a conv-mode layer for one input: ``counts`` (pes x columns, the
    stored kernel's), ``patches`` (positions x columns, the activations offered: nonzero and
    inside the map), ``rows`` per PE, ``previous_rows`` of the layer before in the run.

    The yardsticks sum over positions: ``bound`` is ``sum_p max_k E_k(p)`` (each position
    waits for its most loaded PE before its write-back), ``limit`` ``sum_p ceil(sum_k E_k(p) /
    N)``; ``overhead`` is the prologue and every position's fixed cycles and pipeline fill."""
    cache: dict[bytes, int] = {}
    drains, work = [], np.zeros(config.pes, dtype=np.int64)
    bound = limit = 0
    for patch in np.asarray(patches, dtype=bool):
        key = np.packbits(patch).tobytes()
        if key not in cache:
            cache[key] = simulate_compute(config, counts, patch)
        drains.append(cache[key])
        per_pe = (counts * patch[None, :]).sum(axis=1)
        work += per_pe
        bound += int(per_pe.max())
        limit += ceil_div(int(per_pe.sum()), config.pes)
    positions = len(drains)
    fixed = position_overhead(config, rows)
    prologue = conv_prologue(config, previous_rows)
    return LayerTiming(
        cycles=prologue + positions * fixed + sum(drains), compute=sum(drains),
        overhead=prologue + positions * (fixed + pipeline_fill(config)), work=work,
        limit=limit, bound=bound, nonzero_inputs=int(np.asarray(patches).sum()))


def program_timings(program, x_int) -> list[list[LayerTiming]]:
    """The cycle model of a conv-mode program for every input (rows) and layer (columns);
    ``x_int`` are the engine's integer inputs (its input map)."""
    from .golden import _integers, run_conv_image

    config = program.config
    x = _integers(x_int, config.act_bits)
    _, patches = run_conv_image(config, program.image, x, return_patches=True)
    layers = program.engine_layers
    counts = [program.column_counts(layer) for layer in range(program.layer_count)]
    rows = [ceil_div(layer.out_features, config.pes) for layer in layers]
    return [[conv_layer_timing(config, counts[index], patches[index][b], rows[index],
                               rows[index - 1] if index else None)
             for index in range(program.layer_count)]
            for b in range(len(x))]
