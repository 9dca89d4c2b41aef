"""The broadcast unit: scans a layer's input activations and queues each PE's work.

EIE (Han et al. 2016, section III-B, "activation queue and load balancing") broadcasts each
nonzero input activation, found by a leading-nonzero detector, to every PE's activation queue,
one per cycle.  Here the unit reads ``G = scan_lanes`` activations per cycle and, from the
layer's occupancy word for those columns (one bit per column and PE: does this PE hold entries
in this column?), computes for every PE the lanes it has work for: nonzero activation AND
occupied column.  It pushes the group into the queues of the PEs with a nonzero mask only; the
PEs pick lanes with their own LNZD.  A group waits only for the queues it goes to, and a PE that
takes it early is not held back by one that is full.

So the scan costs ``ceil(in / G)`` cycles per layer whatever the activations are (the cycle
model's fixed scan term), and a PE never spends a cycle on a zero activation or on a column it
has no entry in.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .config import EngineConfig

__all__ = ["BroadcastUnit"]


class BroadcastUnit(wiring.Component):
    """Scan groups ``0 .. groups-1`` of the activation buffer and fill the PE queues.

    Parameters
    ----------
    config : EngineConfig
    occupancy : initial occupancy words (from the program image), or None.

    Ports
    -----
    start : In; one-cycle pulse that starts a scan with the current ``groups``,
        ``occupancy_base`` and ``pointer_base`` (held stable until ``idle``).
    idle : Out; no scan is running and nothing is waiting to be queued.
    activations : the activation buffer's read port (``addr``, ``en`` out; ``data`` in, one
        cycle after ``en``), one word of ``pes`` activations.
    queues : Out(stream of ``isa.group_layout``) per PE.
    occupancy_write : In; host writes of whole occupancy words.
    """

    def __init__(self, config: EngineConfig, *, occupancy=None):
        self._config = config
        self._occupancy_init = [] if occupancy is None else [int(v) for v in occupancy]
        groups = -(-config.max_features // config.scan_lanes)
        super().__init__({
            "start": In(1),
            "groups": In(range(groups + 1)),
            "occupancy_base": In(ceil_log2(max(2, config.occupancy_depth))),
            "pointer_base": In(ceil_log2(max(2, config.pointer_depth))),
            "idle": Out(1),
            "activations": Out(wiring.Signature({
                "addr": Out(ceil_log2(max(2, config.act_words))),
                "en": Out(1),
                "data": In(data.ArrayLayout(signed(config.act_bits), config.pes)),
            })),
            "queues": Out(stream.Signature(isa.group_layout(config))).array(config.pes),
            "occupancy_write": In(wiring.Signature({
                "en": Out(1),
                "addr": Out(ceil_log2(max(2, config.occupancy_depth))),
                "data": Out(isa.occupancy_layout(config).size),
            })),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes, lanes = config.pes, config.scan_lanes
        occupancy_shape = isa.occupancy_layout(config)

        m.submodules.occupancy = occupancy = memory.Memory(
            shape=occupancy_shape.size, depth=config.occupancy_depth,
            init=self._occupancy_init)
        occupancy_w = occupancy.write_port()
        occupancy_r = occupancy.read_port()
        m.d.comb += [
            occupancy_w.en.eq(self.occupancy_write.en),
            occupancy_w.addr.eq(self.occupancy_write.addr),
            occupancy_w.data.eq(self.occupancy_write.data),
        ]

        # ---- fetch: group counter, activation word and sub-group counters ------------------
        running = Signal()
        next_group = Signal.like(self.groups)
        next_word = Signal.like(self.activations.addr)
        next_sub = Signal(range(max(2, config.groups_per_word)))

        # The group whose activations and occupancy are on the memory ports this cycle.
        held = Signal()
        held_group = Signal.like(self.groups)
        next_pointer = Signal.like(self.pointer_base)      # pointer index of the next group
        held_pointer = Signal.like(self.pointer_base)
        held_sub = Signal.like(next_sub)
        fresh = Signal()            # first cycle of the held group: queue to all PEs with work
        pending = Signal(pes)       # PEs that still have to take the held group

        values = Signal(data.ArrayLayout(signed(config.act_bits), lanes))
        words = self.activations.data
        with m.Switch(held_sub):
            for sub in range(config.groups_per_word):
                with m.Case(sub):
                    m.d.comb += values.eq(Cat(words[sub * lanes + lane] for lane in range(lanes)))
        occupied = data.View(occupancy_shape, occupancy_r.data)
        nonzero = Cat(values[lane] != 0 for lane in range(lanes))

        want = Signal(pes)
        for pe, queue in enumerate(self.queues):
            mask = Cat(nonzero[lane] & occupied[lane][pe] for lane in range(lanes))
            m.d.comb += [
                want[pe].eq(held & Mux(fresh, mask != 0, pending[pe])),
                queue.valid.eq(want[pe]),
                queue.payload.pointer.eq(held_pointer),
                queue.payload.mask.eq(mask),
                queue.payload.values.eq(values),
            ]
        refused = Signal(pes)
        m.d.comb += refused.eq(want & ~Cat(queue.ready for queue in self.queues))

        advance = Signal()
        fetch = Signal()
        m.d.comb += [
            advance.eq(~held | (refused == 0)),
            fetch.eq(running & (next_group != self.groups)),
            self.activations.addr.eq(next_word),
            self.activations.en.eq(advance),
            occupancy_r.addr.eq(self.occupancy_base + next_group),
            occupancy_r.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [held.eq(fetch), held_group.eq(next_group), held_sub.eq(next_sub),
                         held_pointer.eq(next_pointer), fresh.eq(1)]
            with m.If(fetch):
                m.d.sync += [next_group.eq(next_group + 1),
                             next_pointer.eq(next_pointer + lanes)]
                with m.If(next_sub == config.groups_per_word - 1):
                    m.d.sync += [next_sub.eq(0), next_word.eq(next_word + 1)]
                with m.Else():
                    m.d.sync += next_sub.eq(next_sub + 1)
        with m.Else():
            m.d.sync += [pending.eq(refused), fresh.eq(0)]

        with m.If(self.start):
            m.d.sync += [running.eq(1), next_group.eq(0), next_word.eq(0), next_sub.eq(0),
                         next_pointer.eq(self.pointer_base)]
        with m.Elif(running & ~fetch & advance):
            m.d.sync += running.eq(0)

        m.d.comb += self.idle.eq(~running & ~held)
        return m

