"""The engine's host bus: its address map, registers and timing.

Every master of the bus (the UART link's bridge, the testbenches, ``isa.image_bus_writes``)
and the engine's own decoder read the address split from :data:`ADDRESS_LAYOUT`, so the
fields are written down once:

========  =======  =============================================================
bits      field    meaning
========  =======  =============================================================
[0:21]    index    the word within the region (memories are at most 2**21 deep)
[21:28]   pe       the PE, for the per-PE regions (:data:`PER_PE_REGIONS`)
[28:32]   region   which memory or register file (:class:`Region`)
========  =======  =============================================================

Data words are 32 bits; wider memory words are written as 32-bit chunks, lowest first, and
the last chunk commits the word (:func:`chunk_index`).
"""

from __future__ import annotations

import functools

from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from .numerics import ceil_div

__all__ = ["ADDRESS_BITS", "ADDRESS_LAYOUT", "BUS_DATA_BITS", "ENGINE_ID", "INDEX_BITS",
           "PE_BITS", "PER_PE_REGIONS", "READ_LATENCY", "Region", "Register", "bus_address",
           "chunk_bits", "chunk_index", "chunks_of", "host_bus_signature"]

BUS_DATA_BITS = 32
ADDRESS_BITS = 32
INDEX_BITS = 21
PE_BITS = 7
ENGINE_ID = 0x53463031          # "SF01"
READ_LATENCY = 4                # cycles from a read's r_en to its r_valid


class Region(enum.IntEnum, shape=ADDRESS_BITS - INDEX_BITS - PE_BITS):
    """Which memory or register file an access goes to."""
    REGISTERS = 0       # index: a :class:`Register`
    CYCLES = 1          # read: cycles of the last run up to the end of layer ``index``
    DESCRIPTORS = 2     # write: layer descriptors, in 32-bit chunks (``chunk_index``)
    CODEBOOK = 3        # write: ``layer * 2**code_bits + code`` -> coefficient
    OCCUPANCY = 4       # write: occupancy words, in 32-bit chunks (``chunk_index``)
    ACTIVATIONS = 5     # read/write: ``isa.activation_index(i)`` (inputs before a run,
                        # outputs after)
    ENTRIES = 6         # write, per PE: sparse-matrix entries
    POINTERS = 7        # write, per PE: column words (``isa.column_words``) at the pointer index
    BIASES = 8          # write, per PE: biases
    SCALES = 9          # write, per PE: per-row scale words at the bias index, in 32-bit chunks
                        # (``isa.scale_layout``; engines with ``multiplier_bits`` only)
    GEOMETRY = 10       # write: each layer's geometry word in 32-bit chunks, chunk ``c`` of
                        # layer ``l`` at ``chunk_index(l, c, width)`` (conv engines only)
    TABLES = 11         # write: activation tables, ``slot * 2**act_bits + value +
                        # 2**(act_bits-1)`` -> output (engines with ``table_slots`` only)


PER_PE_REGIONS = (Region.ENTRIES, Region.POINTERS, Region.BIASES, Region.SCALES)


class Register(enum.IntEnum, shape=3):
    """The engine's registers: the index of an access to :attr:`Region.REGISTERS`."""
    ID = 0              # read: ENGINE_ID
    CONFIG = 1          # read: pes | act_bits << 8 | code_bits << 16 | scan_lanes << 24
    CONTROL = 2         # write 1: start a run; read: bit 0 busy, bit 1 done
    LAYER_COUNT = 3     # read/write: number of layers a run executes
    TOTAL_CYCLES = 4    # read: cycles of the last run, start to done
    INPUT_COUNT = 5     # read: activations received on the input stream since the last run
    RUNS = 6            # read: runs started since reset (lets a host prove exactly-once)


ADDRESS_LAYOUT = data.StructLayout({
    "index": INDEX_BITS,
    "pe": PE_BITS,
    "region": Region,
})


# Cached: loading an image asks for thousands of addresses, and building each through the
# Amaranth layout costs a third of a millisecond.
@functools.lru_cache(maxsize=1 << 16)
def bus_address(region: Region, index: int, pe: int = 0) -> int:
    """The address of word ``index`` of ``region`` (of PE ``pe`` for a per-PE region)."""
    if not 0 <= index < (1 << INDEX_BITS):
        raise ValueError(f"bus index {index} is out of range ({INDEX_BITS} bits)")
    if not 0 <= pe < (1 << PE_BITS):
        raise ValueError(f"PE {pe} is out of range ({PE_BITS} bits)")
    fields = {"index": index, "pe": pe, "region": Region(region)}
    return ADDRESS_LAYOUT.const(fields).as_value().value


def host_bus_signature() -> wiring.Signature:
    """The host bus, seen from its master (the UART bridge, a testbench).

    A write is one cycle of ``w_en`` with ``addr`` and ``w_data``.  A read is one cycle of
    ``r_en`` with ``addr``; ``r_data`` is valid with ``r_valid`` exactly :data:`READ_LATENCY`
    cycles later.  Memory writes while the engine is busy are ignored.  ``addr`` is a plain
    word, as masters compute it (:func:`bus_address`); the engine views it through
    :data:`ADDRESS_LAYOUT`.
    """
    return wiring.Signature({
        "addr": Out(ADDRESS_BITS),
        "w_data": Out(BUS_DATA_BITS),
        "w_en": Out(1),
        "r_en": Out(1),
        "r_data": In(BUS_DATA_BITS),
        "r_valid": In(1),
    })


def chunks_of(width: int) -> int:
    """How many 32-bit bus words a memory word of ``width`` bits takes."""
    return max(1, ceil_div(width, BUS_DATA_BITS))


def chunk_bits(width: int) -> int:
    """Index bits that select the chunk of a wide word: chunk ``c`` of word ``w`` is written at
    index ``w << chunk_bits(width) | c``.  Chunks are written in order; writing the last one
    (``c == chunks_of(width) - 1``) commits the word, so a partly written word never lands."""
    return (chunks_of(width) - 1).bit_length()


def chunk_index(word: int, chunk: int, width: int) -> int:
    """Bus index of chunk ``chunk`` (bits ``[32*chunk, 32*chunk+32)``) of memory word ``word``."""
    if not 0 <= chunk < chunks_of(width):
        raise ValueError(f"chunk {chunk} out of range for a {width}-bit word")
    return (word << chunk_bits(width)) | chunk
