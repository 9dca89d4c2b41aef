"""The write-back: the PEs' accumulators, through shared requantizers, become activations.

EIE writes a layer's results back into its destination activation registers after ReLU (Han et
al., ISCA 2016, section III-C); here every PE reads out one accumulator row at a time, in
lockstep (``writeback.py``'s schedules), and a requantizer shared by a group of
``config.writeback_period`` PEs (``requantize.py``: bias, rescale, saturate, ReLU) takes the
group's PEs in turn, one per cycle.  The running layer's parameters that the write-back uses are
registered here.

With ``config.multiplier_bits`` the requantizers are ``ChannelRequantizer`` s: each keeps the
scale words of its PEs' rows (word ``row * period + phase``) and takes them in the order the
readouts come, so one count from the layer's first row (its bias base times the period)
addresses all of them.
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.compiler import isa
from sparseforge.compiler.config import EngineConfig

from .pe import readout_layout
from .requantize import (ChannelRequantizer, Requantizer, scale_write_signature,
                         table_write_signature)
from .writeback import PES_PER_SCHEDULE, WritebackSchedule, schedule_signature

__all__ = ["WritebackUnit"]


class WritebackUnit(wiring.Component):
    """The write-back schedules and the shared requantizers.

    Parameters
    ----------
    config : EngineConfig
    scales : with ``config.multiplier_bits``, each group's initial scale words, or None.

    Members
    -------
    layer : In(``isa.descriptor_layout``); the running layer (its ``rows``, ``bias_base``,
        ``shift`` and ``relu``; its ``low``, ``high`` and ``leak`` with
        ``config.layer_activation``), registered here before use.
    start : In; a one-cycle pulse starts a layer's write-back.
    schedules : Out(``writeback.schedule_signature``) per PE; which row to read out and when.
    readouts : In(stream of ``pe.readout_layout``, always ready) per PE; the PEs' rows.
    results : Out(stream, always ready); one activation per group of
        ``config.writeback_period`` PEs: group ``g``'s is lane ``g * period + phase``, the
        ``phase``-th of its PEs, ``requantize.latency(config)`` cycles after that PE's readout.
    scale_writes : In(``requantize.scale_write_signature``) per group, with
        ``config.multiplier_bits`` only; the host's writes of its requantizer's scale words.
    table_write : In(``requantize.table_write_signature``), with ``config.table_slots`` only;
        the host's writes of the activation tables, to every requantizer's copy.
    """

    def __init__(self, config: EngineConfig, *, scales=None, tables=None):
        self._config = config
        self._scales = scales
        self._tables = tables
        groups = config.pes // config.writeback_period
        ports = {
            "layer": In(isa.descriptor_layout(config)),
            "start": In(1),
            "schedules": Out(schedule_signature(config)).array(config.pes),
            "readouts": In(stream.Signature(readout_layout(config), always_ready=True))
            .array(config.pes),
            "results": Out(stream.Signature(data.ArrayLayout(signed(config.act_bits), groups),
                                            always_ready=True)),
        }
        if config.row_scales:
            ports["scale_writes"] = In(scale_write_signature(config)).array(groups)
        if config.table_slots:
            ports["table_write"] = In(table_write_signature(config))
        super().__init__(ports)

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
        if config.row_scales or config.layer_activation:
            layer_low = Signal.like(self.layer.low)
            layer_high = Signal.like(self.layer.high)
            m.d.sync += [layer_low.eq(self.layer.low), layer_high.eq(self.layer.high)]
        if config.layer_activation:
            negative_shift = Signal.like(self.layer.shift)
            m.d.sync += negative_shift.eq(self.layer.shift + self.layer.leak)
        if config.table_slots:
            layer_table = Signal()
            layer_table_slot = Signal.like(self.layer.table_slot)
            m.d.sync += [layer_table.eq(self.layer.table),
                         layer_table_slot.eq(self.layer.table_slot)]
        if config.row_scales:
            slot = self._slots(m)
        for group in range(pes // period):
            if config.row_scales:
                requantizer = ChannelRequantizer(
                    config, scales=None if self._scales is None else self._scales[group])
                wiring.connect(m, wiring.flipped(self.scale_writes[group]), requantizer.write)
                m.d.comb += [requantizer.slot.eq(slot), requantizer.low.eq(layer_low),
                             requantizer.high.eq(layer_high)]
            else:
                requantizer = Requantizer(config, tables=self._tables)
                m.d.comb += [requantizer.shift.eq(layer_shift), requantizer.relu.eq(layer_relu)]
                if config.table_slots:
                    m.d.comb += [requantizer.table.eq(layer_table),
                                 requantizer.table_slot.eq(layer_table_slot)]
                    wiring.connect(m, wiring.flipped(self.table_write),
                                   requantizer.table_write)
                if config.layer_activation:
                    m.d.comb += [requantizer.low.eq(layer_low), requantizer.high.eq(layer_high),
                                 requantizer.negative_shift.eq(negative_shift)]
            m.submodules[f"requantizer{group}"] = requantizer
            members = self.readouts[group * period:(group + 1) * period]
            with m.Switch(phase):
                for offset, readout in enumerate(members):
                    with m.Case(offset):
                        m.d.comb += requantizer.i.payload.eq(readout.payload)
            m.d.comb += [
                requantizer.i.valid.eq(members[0].valid),
                self.results.payload[group].eq(requantizer.o.payload),
            ]
            if group == 0:
                m.d.comb += self.results.valid.eq(requantizer.o.valid)
        return m

    def _slots(self, m) -> Signal:
        """The scale word of the readout shown this cycle: the layer's first (its bias base
        times the period) at the write-back's start, then one more per readout, as the rows
        and the groups' PEs come in turn."""
        config = self._config
        slot = Signal(range(max(2, config.scale_depth)))
        first = Signal.like(slot)
        m.d.sync += first.eq(self.layer.bias_base * config.writeback_period)
        with m.If(self.start):
            m.d.sync += slot.eq(first)
        with m.Elif(self.readouts[0].valid):
            m.d.sync += slot.eq(slot + 1)
        return slot
