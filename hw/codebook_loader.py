"""The sequencer's codebook loader: copies one layer's codebook into the PEs' shared registers.

EIE loads each layer's codebook (the shared weights of Deep Compression's weight sharing)
into the PEs' lookup tables before the layer runs (Han et al. 2016, section III-B).  Here the
layer's ``2**code_bits`` values are read from the codebook memory, one per cycle, and written
into the codebook registers that every PE reads.  The loader runs beside the sequencer's state
machine, so that the next layer's codebook loads during this layer's write-back, when no PE
reads the registers.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler.config import EngineConfig

__all__ = ["CodebookLoader", "codebook_read_signature", "codebook_write_signature"]


def codebook_read_signature(config: EngineConfig) -> wiring.Signature:
    """A read port of the codebook memory (``data`` a cycle after ``addr``), seen from its
    reader: the value at ``layer * 2**code_bits + code``."""
    return wiring.Signature({
        "addr": Out(ceil_log2(max(2, config.max_layers * config.codebook_size))),
        "data": In(signed(config.coef_bits)),
    })


def codebook_write_signature(config: EngineConfig) -> wiring.Signature:
    """Writes into the codebook registers every PE reads: ``value`` to code ``index``."""
    return wiring.Signature({
        "en": Out(1),
        "index": Out(config.code_bits),
        "value": Out(signed(config.coef_bits)),
    })


class CodebookLoader(wiring.Component):
    """Copy a layer's codebook from the codebook memory into the registers, a value a cycle.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    start : In; load the codebook of layer ``layer`` (a pulse; it restarts a load under way).
    layer : In; the layer, while ``start``.
    loading : Out; a load is under way (a register).
    target : Out; the layer whose codebook is loading (a register).
    finishing : Out; while ``loading``, this cycle writes the codebook's last value: the load
        ends at the clock edge.
    codebook : Out; the codebook memory's read port (``data`` a cycle after ``addr``).
    codebook_write : Out; ``en``, ``index``, ``value``: writes the codebook registers.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        layer_bits = ceil_log2(max(2, config.max_layers))
        super().__init__({
            "start": In(1),
            "layer": In(layer_bits),
            "loading": Out(1),
            "target": Out(layer_bits),
            "finishing": Out(1),
            "codebook": Out(codebook_read_signature(config)),
            "codebook_write": Out(codebook_write_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        loading, target = self.loading, self.target

        # `code` runs a value ahead of the one written: the memory answers a cycle later.
        code = Signal(range(config.codebook_size + 1))
        m.d.comb += self.finishing.eq(code == config.codebook_size)
        with m.If(self.start):
            m.d.sync += [loading.eq(1), code.eq(0), target.eq(self.layer)]
        with m.Elif(loading):
            m.d.sync += code.eq(code + 1)
            with m.If(self.finishing):
                m.d.sync += loading.eq(0)
        m.d.comb += [
            self.codebook.addr.eq((target << config.code_bits) | code),
            self.codebook_write.en.eq(loading & (code != 0)),
            self.codebook_write.index.eq(code - 1),
            self.codebook_write.value.eq(self.codebook.data),
        ]
        return m
