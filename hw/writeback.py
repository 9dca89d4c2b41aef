"""The write-back schedule: which row the PEs read out and clear, and when.

Every PE reads out the same row of its accumulator file and the same bias address in the same
cycle (the engine's requantizers take the PEs of a group in turn, ``config.writeback_period``
cycles per row), so the counters that say which row and when are the same in every PE.  One
schedule drives a few PEs instead: on an iCE40 a copy in every PE was about 45 logic cells each,
and Yosys cannot merge counters that feed back on themselves.  A schedule drives at most
``PES_PER_SCHEDULE`` PEs, so that its outputs reach the block RAMs of a few PEs, not of the
whole die.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sparseforge.compiler.config import EngineConfig

__all__ = ["WritebackSchedule", "schedule_signature", "PES_PER_SCHEDULE"]

PES_PER_SCHEDULE = 8


def schedule_signature(config: EngineConfig) -> wiring.Signature:
    """What a PE follows at write-back (members are outputs of the schedule).

    active : a write-back is running: the accumulator and parameter memories' read ports serve
        it (``row``, ``bias_address``) instead of the multiply-accumulate path.
    read : read row ``row`` and its bias now (every ``period`` cycles while active).
    clear, clear_row : the reads issued last cycle have landed: clear that row.
    showing : the last row read is on the PEs' readout (``period`` cycles from its landing).
    """
    return wiring.Signature({
        "active": Out(1),
        "read": Out(1),
        "row": Out(config.row_bits),
        "bias_address": Out(ceil_log2(config.parameter_depth)),
        "clear": Out(1),
        "clear_row": Out(config.row_bits),
        "showing": Out(1),
    })


class WritebackSchedule(wiring.Component):
    """Counts a layer's write-back for the PEs it drives.

    Members
    -------
    start : In; a one-cycle pulse starts the write-back of ``rows`` rows: every ``period``
        cycles (``config.writeback_period``) a row is read and, a cycle later, cleared.
    rows : In; the running layer's rows per PE, stable while it runs.
    bias_base : In; where the running layer's biases start in the parameter memories.
    schedule : Out(``schedule_signature``), to the PEs.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            "start": In(1),
            "rows": In(config.row_bits),
            "bias_base": In(ceil_log2(config.parameter_depth)),
            "schedule": Out(schedule_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        period = config.writeback_period
        schedule = self.schedule

        slot = Signal(range(max(2, period)))
        m.d.comb += schedule.read.eq(schedule.active & (slot == 0))
        with m.If(self.start):
            m.d.sync += [schedule.active.eq(1), schedule.row.eq(0), slot.eq(0),
                         schedule.bias_address.eq(self.bias_base)]
        with m.Elif(schedule.active):
            with m.If(slot == period - 1):
                m.d.sync += [slot.eq(0), schedule.row.eq(schedule.row + 1),
                             schedule.bias_address.eq(schedule.bias_address + 1)]
                with m.If(schedule.row + 1 == self.rows):
                    m.d.sync += schedule.active.eq(0)
            with m.Else():
                m.d.sync += slot.eq(slot + 1)
        m.d.sync += [schedule.clear.eq(schedule.read), schedule.clear_row.eq(schedule.row)]

        # The readout holds (the PEs' ports read nothing else) until the next row's reads.
        window = Signal(range(period + 1))      # cycles the readout has left on show
        with m.If(schedule.read):
            m.d.sync += window.eq(period)
        with m.Elif(window != 0):
            m.d.sync += window.eq(window - 1)
        m.d.comb += schedule.showing.eq(window != 0)
        return m
