"""The broadcast unit: scans a layer's input activations and queues each PE's work.

EIE (Han et al., ISCA 2016, "Activation Queue and Load Balancing") broadcasts each nonzero
input activation, found by a leading-nonzero detector, to every PE's activation queue, one per
cycle.  Here the unit reads ``G = scan_lanes`` activations per cycle and, from the
layer's occupancy word for those columns (one bit per column and PE: does this PE hold entries
in this column?), computes for every PE the lanes it has work for: nonzero activation AND
occupied column.  It pushes the group into the queues of the PEs with a nonzero mask only; the
PEs pick lanes with their own LNZD.  A group waits only for the queues it goes to, and a PE that
takes it early is not held back by one that is full.  A group no PE has work for is offered
to none and leaves at once.

The unit is a pipeline, so that no path runs from the memories' outputs through the PEs'
queues and back to the memories' read enables:

1. fetch (``broadcast_fetch.py``): ask for the next group's activation word, when the buffer
   behind has room for it counting the reads in flight (a counter of that room: a decision on
   registers only); the activation buffer registers the request and answers two cycles later,
   so the occupancy word (``occupancy.py``) is read a cycle after the ask, from a register, to
   land with it;
2. land and mask (``broadcast_mask.py``): the words land in registers; the next cycle the
   per-PE masks are computed and written into a small buffer (``pingpong_fifo.py``);
3. offer (``broadcast_offer.py``): the buffer's head (a register) is offered to the queues of
   the PEs that want it and have not taken it yet, each through a counter of its queue's free
   entries (``broadcast_queue.py``); it leaves the buffer once every one of them has.

So the scan costs ``ceil(in / G)`` cycles per layer whatever the activations are (the cycle
model's scan term), and a PE never spends a cycle on a zero activation or on a column it
has no entry in.  With ``config.skip_zeros`` (one lane) the fetch stage asks only for the
nonzero activations, which a map beside the activation buffer tells it a word at a time
(``nonzero_map.py``): about a cycle per nonzero input instead of one per input.
"""

from amaranth import Module, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .broadcast_fetch import FetchStage, scan_members
from .broadcast_mask import MaskStage
from .broadcast_offer import OfferStage, offer_layout
from .nonzero_map import NonzeroMap, map_write_signature
from .occupancy import OccupancyMemory, write_signature
from .pingpong_fifo import PingPongFIFO

__all__ = ["BroadcastUnit", "BUFFER_DEPTH", "buffer_depth", "offer_layout"]

# Groups between the mask and offer stages.  With the three groups in flight counted against it
# (asked, landing, landed), a cycle more inside the buffer to its output register and a cycle
# before the room counter sees a pop (`popped`, a register), seven entries let the fetch stage
# ask for a group every cycle while the offer stage takes one.  (With six, the scan ran at six
# groups in seven cycles: on short layers the measured cycles drifted past the bound.)
BUFFER_DEPTH = 7


def buffer_depth(config: EngineConfig) -> int:
    """The buffer's depth: one more with ``config.link_registers``, whose masked groups go
    through a register on their way into it (a fourth group in flight)."""
    return BUFFER_DEPTH + config.link_registers


class BroadcastUnit(wiring.Component):
    """Scan groups ``0 .. groups-1`` of the activation buffer and fill the PE queues.

    Parameters
    ----------
    config : EngineConfig
    occupancy : initial occupancy words (from the program image), or None.

    Members
    -------
    start : In; one-cycle pulse that starts a scan with the current ``groups``,
        ``occupancy_base`` and ``pointer_base`` (held stable until ``idle``).
    groups, occupancy_base, pointer_base : In; the layer's group count, the address of its
        first occupancy word and the pointer index of its first column.
    idle : Out; no scan is running and nothing is waiting to be queued.
    activations : the activation buffer's read port (``addr``, ``en`` out; ``data`` in,
        ``ACTIVATION_LATENCY`` = 2 cycles after ``en``), one word of ``pes`` activations.
    queues : Out(stream of ``isa.group_layout``) per PE, each into a queue of
        ``config.fifo_depth`` groups: the unit offers a group only when it knows the queue has
        room, so ``valid`` means a transfer.
    dequeued : In; per PE, a group left its queue this cycle (the unit counts free entries).
    occupancy_write : In; host writes of whole occupancy words.
    activation_write : In(``nonzero_map.map_write_signature``); with ``config.skip_zeros``,
        every write into the activation buffer (for the nonzero map).
    """

    def __init__(self, config: EngineConfig, *, occupancy=None):
        self._config = config
        self._occupancy_init = [] if occupancy is None else [int(v) for v in occupancy]
        super().__init__({
            **scan_members(config),
            "idle": Out(1),
            "activations": Out(wiring.Signature({
                "addr": Out(ceil_log2(max(2, config.act_words))),
                "en": Out(1),
                "data": In(data.ArrayLayout(signed(config.act_bits), config.pes)),
            })),
            "queues": Out(stream.Signature(isa.group_layout(config))).array(config.pes),
            "dequeued": In(config.pes),
            "occupancy_write": In(write_signature(config)),
            **({"activation_write": In(map_write_signature(config))}
               if config.skip_zeros else {}),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        depth = buffer_depth(config)

        m.submodules.occupancy = occupancy = OccupancyMemory(config, init=self._occupancy_init)
        m.submodules.fetch = fetch = FetchStage(config, buffer_depth=depth)
        m.submodules.mask = mask = MaskStage(config)
        # Its output is a register, so the offer stage starts from flip-flops; two registers
        # taking turns, so that the pop decides a few flip-flops instead of the clock enable of
        # every bit of the head (pingpong_fifo.py; the timing is SyncFIFOBuffered's).
        m.submodules.buffer = buffer = PingPongFIFO(width=offer_layout(config).size,
                                                    depth=depth)
        m.submodules.offer = offer = OfferStage(config)

        wiring.connect(m, wiring.flipped(self.occupancy_write), occupancy.write)
        if config.skip_zeros:
            m.submodules.nonzero_map = nonzero_map = NonzeroMap(config)
            wiring.connect(m, wiring.flipped(self.activation_write), nonzero_map.write)
            wiring.connect(m, fetch.nonzero, nonzero_map.read)

        # ---- 1. fetch: the activation word, then the occupancy word --------------------------
        if config.conv:
            m.d.comb += [fetch.geometry.eq(self.geometry),
                         fetch.origin.row.eq(self.origin.row),
                         fetch.origin.col.eq(self.origin.col),
                         fetch.origin.addr.eq(self.origin.addr)]
        m.d.comb += [
            fetch.start.eq(self.start),
            fetch.groups.eq(self.groups),
            fetch.occupancy_base.eq(self.occupancy_base),
            fetch.pointer_base.eq(self.pointer_base),
            self.activations.addr.eq(fetch.activations.addr),
            self.activations.en.eq(fetch.activations.en),
            occupancy.read.addr.eq(fetch.occupancy.addr),
            occupancy.read.en.eq(fetch.occupancy.en),
        ]

        # ---- 2. land, then mask into the buffer ----------------------------------------------
        wiring.connect(m, fetch.landing, mask.landing)
        m.d.comb += [
            mask.activations.eq(self.activations.data),
            mask.occupancy.eq(occupancy.read.data),
            buffer.w_data.eq(mask.w_data),
            buffer.w_en.eq(mask.w_en),
        ]

        # ---- 3. offer the buffer's head to the PEs' queues -----------------------------------
        m.d.comb += [
            offer.head.valid.eq(buffer.r_rdy),
            offer.head.payload.eq(buffer.r_data),
            offer.next_if_popped.eq(buffer.next_if_read),
            offer.next_if_kept.eq(buffer.next_if_kept),
            buffer.r_en.eq(offer.head.ready),
            fetch.pop.eq(offer.pop),
            offer.dequeued.eq(self.dequeued),
        ]
        for queue, offered in zip(self.queues, offer.queues):
            wiring.connect(m, offered, wiring.flipped(queue))

        # The buffer's level, not its r_rdy: a group on its way to the output register counts.
        m.d.comb += self.idle.eq(~fetch.running & ~fetch.asked & ~fetch.landing.valid
                                 & ~mask.landed & ~mask.link_valid & (buffer.level == 0)
                                 & (offer.link_valid == 0) & (offer.far_valid == 0))
        return m
