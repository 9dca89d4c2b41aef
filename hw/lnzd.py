"""EIE's leading-nonzero detector (Han et al. 2016, section III-B): which lane of a group
comes next.

Used by the broadcast unit (each PE's first lane with work in a group) and by a PE's front end
(the lane after the one it issues).  Lanes are taken lowest first, so it finds the lowest set
bit: a priority encoder, combinational, ``len(mask)`` wide.
"""

from amaranth import Module, Signal

__all__ = ["lowest_set_bit"]


def lowest_set_bit(m: Module, mask) -> Signal:
    """Index of the lowest set bit of ``mask`` (0 when ``mask`` is 0), driven in ``m``."""
    index = Signal(range(max(2, len(mask))))
    for bit in reversed(range(len(mask))):
        with m.If(mask[bit]):
            m.d.comb += index.eq(bit)
    return index
