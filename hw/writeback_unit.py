"""The write-back: the PEs' accumulators, through shared requantizers, become activations.

EIE writes a layer's results back into its destination activation registers after ReLU (Han et
al., ISCA 2016, section III-C); here every PE reads out one accumulator row at a time, in
lockstep (``writeback.py``'s schedules), and a requantizer shared by a group of
``config.writeback_period`` PEs (``requantize.py``: bias, rescale, saturate, ReLU) takes the
group's PEs in turn, one per cycle.  The running layer's parameters that the write-back uses are
registered here.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .pe import readout_layout
from .requantize import Requantizer
from .writeback import PES_PER_SCHEDULE, WritebackSchedule, schedule_signature

__all__ = ["WritebackUnit"]


class WritebackUnit(wiring.Component):
    """The write-back schedules and the shared requantizers.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    layer : In(``isa.descriptor_layout``); the running layer (its ``rows``, ``bias_base``,
        ``shift`` and ``relu``), registered here before use.
    start : In; a one-cycle pulse starts a layer's write-back.
    schedules : Out(``writeback.schedule_signature``) per PE; which row to read out and when.
    readouts : In(stream of ``pe.readout_layout``, always ready) per PE; the PEs' rows.
    results : Out(stream, always ready); one activation per group of
        ``config.writeback_period`` PEs: group ``g``'s is lane ``g * period + phase``, the
        ``phase``-th of its PEs, ``requantize.latency(config)`` cycles after that PE's readout.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        groups = config.pes // config.writeback_period
        super().__init__({
            "layer": In(isa.descriptor_layout(config)),
            "start": In(1),
            "schedules": Out(schedule_signature(config)).array(config.pes),
            "readouts": In(stream.Signature(readout_layout(config), always_ready=True))
            .array(config.pes),
            "results": Out(stream.Signature(data.ArrayLayout(signed(config.act_bits), groups),
                                            always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pes, period = config.pes, config.writeback_period

        # Where the layer's biases start in every PE's parameter memory (after the columns).
        # Registered: the descriptor is read long before the write-back needs it.
        bias_base = Signal(range(config.parameter_depth))
        m.d.sync += bias_base.eq(config.pointer_depth + self.layer.bias_base)
        # Likewise the write-back's row count and requantize parameters: the descriptor is a
        # block RAM's output, and `rows` is the sequencer's choice between it and the clear
        # after reset; each goes to every PE or requantizer.  The register starts at the
        # clear's row count, which the first write-back after reset uses.
        layer_rows = Signal.like(self.layer.rows, init=config.max_rows)
        layer_shift = Signal.like(self.layer.shift)
        layer_relu = Signal()
        m.d.sync += [layer_rows.eq(self.layer.rows), layer_shift.eq(self.layer.shift),
                     layer_relu.eq(self.layer.relu)]

        for first in range(0, pes, PES_PER_SCHEDULE):
            schedule = WritebackSchedule(config)
            m.submodules[f"writeback{first // PES_PER_SCHEDULE}"] = schedule
            m.d.comb += [schedule.start.eq(self.start), schedule.rows.eq(layer_rows),
                         schedule.bias_base.eq(bias_base)]
            served = self.schedules[first:first + PES_PER_SCHEDULE]
            wiring.connect(m, schedule.schedule, *map(wiring.flipped, served))

        # The requantizers share the PEs of a group of `period`, one per cycle.
        phase = Signal(range(max(2, period)))          # which PE of each group is served
        with m.If(self.readouts[0].valid):
            m.d.sync += phase.eq(0 if period == 1 else phase + 1)
        with m.Else():
            m.d.sync += phase.eq(0)
        for group in range(pes // period):
            m.submodules[f"requantizer{group}"] = requantizer = Requantizer(config)
            members = self.readouts[group * period:(group + 1) * period]
            with m.Switch(phase):
                for offset, readout in enumerate(members):
                    with m.Case(offset):
                        m.d.comb += requantizer.i.payload.eq(readout.payload)
            m.d.comb += [
                requantizer.i.valid.eq(members[0].valid),
                requantizer.shift.eq(layer_shift),
                requantizer.relu.eq(layer_relu),
                self.results.payload[group].eq(requantizer.o.payload),
            ]
            if group == 0:
                m.d.comb += self.results.valid.eq(requantizer.o.valid)
        return m
