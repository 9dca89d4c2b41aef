"""The domain of a signal that crosses the die with ``config.link_registers``.

On a large die (an ECP5-85F with 32 PEs) the broadcast unit, the sequencer and the shared
requantizers cannot sit near every PE, so the signals that travel between them (a PE's
``busy`` and ``dequeued``, its readout, the host's writes) go through a register on the way: a
cycle later, and the path ends at the register.  Without link registers the same assignment is
combinational.
"""

from sparseforge.compiler.config import EngineConfig

__all__ = ["link_domain"]


def link_domain(config: EngineConfig) -> str:
    """``"sync"`` with ``config.link_registers``, else ``"comb"``: ``m.d[link_domain(config)]``
    drives a signal a cycle later through a register, or at once."""
    return "sync" if config.link_registers else "comb"
