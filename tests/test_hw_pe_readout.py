"""hw/pe_readout.py: the parameter memory's port reads the front end's column words until a
write-back takes it for the biases; the readout shows accumulator and bias while the schedule
says (a cycle later with link registers)."""

import pytest
from amaranth import ClockDomain, Module
from amaranth.sim import Simulator

from sparseforge.compiler.config import EngineConfig
from sparseforge.hw.pe_readout import Readout


@pytest.mark.parametrize("link_registers", [False, True])
def test_port_sharing_and_readout(link_registers):
    config = EngineConfig(pes=1, link_registers=link_registers)
    dut = Readout(config)
    seen = {}

    async def testbench(ctx):
        wb, column, port = dut.writeback, dut.column_read, dut.parameter_read
        ctx.set(column.addr, 5)
        ctx.set(column.en, 1)
        ctx.set(wb.bias_address, 9)
        ctx.set(port.data, 0x1234)
        seen["computing"] = (ctx.get(port.addr), ctx.get(port.en), ctx.get(column.data))
        ctx.set(column.en, 0)
        ctx.set(wb.active, 1)
        seen["between_reads"] = (ctx.get(port.addr), ctx.get(port.en))
        ctx.set(wb.read, 1)
        seen["bias_read"] = (ctx.get(port.addr), ctx.get(port.en))
        ctx.set(wb.read, 0)
        ctx.set(wb.showing, 1)
        ctx.set(dut.acc, -77)
        ctx.set(port.data, 0xFFF6)                  # a bias of -10 in 16 bits
        shown = []
        for _ in range(3):
            valid = ctx.get(dut.readout.valid)
            payload = ctx.get(dut.readout.payload)
            shown.append((valid, payload.acc, payload.bias) if valid else (valid,))
            await ctx.tick()
            ctx.set(wb.showing, 0)
        seen["shown"] = shown

    top = Module()
    top.submodules.dut = dut
    top.domains.sync = ClockDomain()        # combinational alone without link registers
    simulator = Simulator(top)
    simulator.add_clock(1e-8)
    simulator.add_testbench(testbench)
    simulator.run()
    assert seen["computing"] == (5, 1, 0x1234)
    assert seen["between_reads"] == (9, 0)
    assert seen["bias_read"] == (9, 1)
    row = (1, -77, -10)
    assert seen["shown"] == ([(0,), row, (0,)] if link_registers else [row, (0,), (0,)])
