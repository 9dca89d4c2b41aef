"""Memories that only the host writes, read without collision logic.

A synchronous Amaranth read port that shares a memory with a write port promises the old word
when both name the same address in one cycle.  Block RAMs (ECP5 DP16KD, iCE40 SB_RAM40_4K) do
not promise that across their two ports, so Yosys builds it: a register for the write's data
and address, a comparator, and a multiplexer on the block RAM's output.  On an ECP5 that
multiplexer sat behind the block RAM's 5.8 ns clock-to-out on the engine's critical path; on an
iCE40 the logic is about 30 cells a memory.

The engine's parameter, entry, occupancy, descriptor and codebook memories are written only by
the host, and the host bus refuses writes while the engine runs; the bridge's frame buffer is
written while a frame arrives and read after.  Nothing reads a word in the cycle it is written,
so the collision's answer does not matter.  Yosys honours the ``no_rw_check`` memory attribute
("any value on a collision") only when it folds a register into an asynchronous read port, so
the port here is built that way: the same timing and, in simulation, the same old-word answer.
"""

from types import SimpleNamespace

from amaranth import Signal
from amaranth.lib import memory

__all__ = ["ATTRIBUTES", "on_ice40", "registered_read_port"]

# Memory attributes for a host-written memory (merge with any others, such as ram_style).
ATTRIBUTES = {"no_rw_check": 1}


def on_ice40(platform) -> bool:
    """Whether ``platform`` builds for an iCE40 (whose small memories Yosys would make of
    flip-flops, where a block RAM is cheaper in the part's scarce logic)."""
    return (getattr(platform, "device", "") or "").startswith("iCE40")


def registered_read_port(m, storage: memory.Memory, name: str) -> SimpleNamespace:
    """A read port of ``storage`` with a synchronous read port's members and timing.

    ``addr`` is read at a clock edge when ``en`` (default 1) is high, and ``data`` holds the
    word from that edge until the next read.  ``storage`` should carry ``ATTRIBUTES``; a read
    of a word in the cycle it is written returns any value on hardware.  ``name`` prefixes the
    port's signals.
    """
    port = storage.read_port(domain="comb")
    addr = Signal.like(port.addr, name=f"{name}_addr")
    en = Signal(init=1, name=f"{name}_en")
    read_data = Signal.like(port.data, name=f"{name}_data", reset_less=True)
    m.d.comb += port.addr.eq(addr)
    with m.If(en):
        m.d.sync += read_data.eq(port.data)
    return SimpleNamespace(addr=addr, en=en, data=read_data)
