"""A PE's arithmetic: decode each entry, multiply, and accumulate into the accumulator file.

EIE (Han et al., ISCA 2016, section III-C): each entry's relative zero run gives its row
(counted from the previous entry's row, or from the column's top for its first), its 4-bit code
is decoded through the layer's codebook, and the weight times the column's activation is added
to the row's accumulator.  Pipeline, one entry per cycle::

    decode (row, weight) -> multiply -> accumulate (read in the multiply stage, write in the next)

With ``config.decoded_weights`` the entry memory holds the codebook value itself
(``pe_memories.py``) and the decode is the row alone.  At write-back the schedule
(``writeback.py``) takes over the accumulator file's ports: it reads each row out and clears it,
so the next layer starts from zero.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .multiply import LATENCY as MULTIPLIER_LATENCY
from .multiply import RegisteredMultiplier
from .pe_accumulators import AccumulatorFile
from .pe_walker import step_layout
from .writeback import schedule_signature

__all__ = ["MultiplyAccumulate"]


class MultiplyAccumulate(wiring.Component):
    """Decodes the walker's entries, multiplies, accumulates; reads out and clears rows at
    write-back.

    Members
    -------
    steps : In(stream of ``pe_walker.step_layout``), always ready; an entry is read this cycle.
    entry : In(``isa.entry_memory_layout``); the entry read in the previous step's cycle (the
        entry memory's output, a clock edge after its read).
    codebook : In; the running layer's codebook values (unused with
        ``config.decoded_weights``).
    writeback : In(``writeback.schedule_signature``); while ``active`` the accumulator file
        reads the schedule's rows, and ``clear`` clears one.
    acc : Out(``signed(config.acc_bits)``); the accumulator read out at write-back, held until
        the next row's read.
    busy : Out; an entry is in the pipeline.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "steps": In(stream.Signature(step_layout(config), always_ready=True)),
            "entry": In(isa.entry_memory_layout(config)),
            "codebook": In(data.ArrayLayout(signed(config.coef_bits), config.codebook_size)),
            "writeback": In(schedule_signature(config)),
            "acc": Out(signed(config.acc_bits)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        steps = self.steps
        m.submodules.accumulators = accumulators = AccumulatorFile(config)
        acc_w, acc_r = accumulators.write, accumulators.read

        # ---- decode: entry -> row and weight ----------------------------------------------
        decode_valid = Signal()
        decode_first = Signal(reset_less=True)
        decode_value = Signal(signed(config.act_bits), reset_less=True)
        m.d.sync += [
            decode_valid.eq(steps.valid),
            decode_first.eq(steps.valid & steps.payload.first),
            decode_value.eq(steps.payload.value),
        ]
        fetched = self.entry
        previous_row = Signal(config.row_bits, reset_less=True)
        row = Signal(config.row_bits)
        m.d.comb += row.eq(Mux(decode_first, fetched.zero_run,
                               previous_row + fetched.zero_run + 1))
        # The multiplier registers its operands (the multiply stage) and its product (the
        # accumulate stage), inside the DSP block where there is one (hw/multiply.py).
        m.submodules.multiplier = multiplier = RegisteredMultiplier(
            config.act_bits, config.coef_bits, in_logic=config.lut_products)
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

        # ---- the accumulator file: accumulate, or the write-back's read-out and clear -------
        writeback = self.writeback
        m.d.comb += acc_r.addr.eq(Mux(writeback.active, writeback.row, multiply_row))
        with m.If(writeback.clear):
            # Read out and clear: the next layer starts from zero.
            m.d.comb += [acc_w.addr.eq(writeback.clear_row), acc_w.data.eq(0), acc_w.en.eq(1)]
        with m.Else():
            m.d.comb += [
                acc_w.addr.eq(accumulate_row),
                acc_w.data.eq(acc_r.data + product),
                acc_w.en.eq(accumulate_valid),
            ]
        # The read-out row is held (the port reads nothing else) until the next row's read; the
        # clear of the row does not disturb the held word.
        m.d.comb += [
            acc_r.en.eq(~writeback.active | writeback.read),
            self.acc.eq(acc_r.data),
            self.busy.eq(decode_valid | multiply_valid | accumulate_valid),
        ]
        return m
