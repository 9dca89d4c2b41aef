"""The broadcast unit's mask stage: which PEs have work in a group, and in which lanes.

EIE (Han et al., ISCA 2016, "Activation Queue and Load Balancing") broadcasts each nonzero
activation to every PE, and a PE spends a cycle on it even when it holds no entry in that column.
Here the group's activations land with its occupancy word (one bit per column and PE: does this PE
hold entries in this column?), and the stage computes for every PE the lanes it has work in:
nonzero activation AND occupied column.  With several lanes, EIE's leading-nonzero detector finds
each PE's first such lane here, before the group is queued, so that the PE's front end takes its
first column straight from its queue (``isa.group_layout``).

In conv mode a group in the padding (``landing.pad``) lands as zeros: no PE has work in it.

The words are registered as they land (the activation buffer's SPRAMs sit at the die's
corners, and their outputs have no time left for the masks); the masks are computed the next
cycle and written into the buffer in front of the offer stage.
"""

from amaranth import Cat, Const, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .broadcast_fetch import landing_signature
from .broadcast_offer import offer_layout
from .lnzd import lowest_set_bit

__all__ = ["MaskStage"]


class MaskStage(wiring.Component):
    """Register a landing group's words, then write its per-PE masks into the buffer.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    landing : In(``landing_signature``); the group whose words land this cycle.
    activations : In; the activation word landing (``pes`` activations).
    occupancy : In(``isa.occupancy_layout``); the group's occupancy word, landing with it.
    w_data : Out(``offer_layout``); the masked group, for the buffer.
    w_en : Out; write ``w_data`` into the buffer (the fetch stage made room for it).
    landed : Out; a group's words are in the landing registers (a register).
    link_valid : Out; with ``config.link_registers``, a masked group is in the register in
        front of the buffer (a register; 0 without).
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "landing": In(landing_signature(config)),
            "activations": In(data.ArrayLayout(signed(config.act_bits), config.pes)),
            "occupancy": In(isa.occupancy_layout(config)),
            "w_data": Out(offer_layout(config)),
            "w_en": Out(1),
            "landed": Out(1),
            "link_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes, lanes = config.pes, config.scan_lanes
        entry = offer_layout(config)

        # ---- land ----------------------------------------------------------------------------
        landed = self.landed
        landed_values = Signal(data.ArrayLayout(signed(config.act_bits), lanes),
                               reset_less=True)
        landed_nonzero = Signal(lanes, reset_less=True)
        landed_occupancy = Signal(isa.occupancy_layout(config), reset_less=True)
        landed_pointer = Signal.like(self.landing.pointer, reset_less=True)
        words = self.activations
        m.d.sync += [landed.eq(self.landing.valid), landed_occupancy.eq(self.occupancy),
                     landed_pointer.eq(self.landing.pointer)]
        with m.Switch(self.landing.sub):
            for sub in range(config.groups_per_word):
                with m.Case(sub):
                    lane_values = [words[sub * lanes + lane] for lane in range(lanes)]
                    nonzero = Cat(v != 0 for v in lane_values)
                    if config.conv:
                        nonzero = nonzero & ~self.landing.pad.replicate(lanes)
                    m.d.sync += [landed_values.eq(Cat(lane_values)),
                                 landed_nonzero.eq(nonzero)]

        # ---- mask ----------------------------------------------------------------------------
        masked = Signal(entry)
        m.d.comb += masked.values.eq(landed_values)
        occupied = landed_occupancy
        nonzero = landed_nonzero
        for pe in range(pes):
            mask = Cat(nonzero[lane] & occupied[lane][pe] for lane in range(lanes))
            m.d.comb += masked.wants[pe].eq(mask != 0)
            if lanes > 1:
                # The lanes after the first: each a function of the mask's bits up to it (no
                # borrow chain, as mask & (mask - 1) would make).
                m.d.comb += [
                    masked.firsts[pe].eq(lowest_set_bit(m, mask)),
                    masked.rests[pe].eq(Cat(mask[lane] & (mask[:lane] != 0) if lane
                                            else Const(0, 1) for lane in range(lanes))),
                ]
        m.d.comb += masked.pointer.eq(landed_pointer)

        # ---- into the buffer -----------------------------------------------------------------
        # Every landed group is written, the fetch made room for it.  (A group no PE has work
        # for is offered to none and leaves at once; dropping it here would put the OR of
        # every PE's mask in the path to the buffer's write enable.)
        if config.link_registers:
            # The buffer's LUT RAM is as wide as a PE mask for each PE: spread over many slices,
            # it is written from a register, not from the masks' logic.
            masked_entry = Signal(entry, reset_less=True)
            m.d.sync += [self.link_valid.eq(landed), masked_entry.eq(masked)]
            m.d.comb += [self.w_data.eq(masked_entry), self.w_en.eq(self.link_valid)]
        else:
            m.d.comb += [self.w_data.eq(masked), self.w_en.eq(landed)]
        return m
