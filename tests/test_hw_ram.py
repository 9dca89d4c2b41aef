"""hw/ram.py: a host-written memory's read port times like a synchronous one, and Yosys maps
it to a bare block RAM, without the logic that answers a read-write collision."""

import json
import subprocess
from collections import Counter

import pytest
from amaranth import Module
from amaranth.back import rtlil
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from sparseforge.hw import ram, toolchain


class HostWritten(wiring.Component):
    """A 200 x 16 memory (one block RAM on either family) with a write port and a read port,
    as the engine builds them."""
    w_addr: In(8)
    w_data: In(16)
    w_en: In(1)
    r_addr: In(8)
    r_en: In(1, init=1)
    r_data: Out(16)

    def __init__(self, *, registered: bool):
        self._registered = registered
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        attrs = ram.ATTRIBUTES if self._registered else None
        m.submodules.storage = storage = memory.Memory(shape=16, depth=200, init=[], attrs=attrs)
        write = storage.write_port()
        read = (ram.registered_read_port(m, storage, "read") if self._registered
                else storage.read_port())
        m.d.comb += [
            write.addr.eq(self.w_addr), write.data.eq(self.w_data), write.en.eq(self.w_en),
            read.addr.eq(self.r_addr), read.en.eq(self.r_en), self.r_data.eq(read.data),
        ]
        return m


@pytest.mark.parametrize("registered", [False, True], ids=["read_port", "registered"])
def test_reads_like_a_synchronous_port(registered):
    """Same answers, cycle for cycle, as Amaranth's synchronous port: a read lands at the next
    edge, holds while ``en`` is low, and a read of the word being written returns the old one."""
    dut = HostWritten(registered=registered)
    seen = []

    async def testbench(ctx):
        for address in range(4):
            ctx.set(dut.w_addr, address)
            ctx.set(dut.w_data, 100 + address)
            ctx.set(dut.w_en, 1)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(dut.r_addr, 2)
        await ctx.tick()
        seen.append(ctx.get(dut.r_data))            # 102
        ctx.set(dut.r_en, 0)
        ctx.set(dut.r_addr, 3)
        await ctx.tick()
        seen.append(ctx.get(dut.r_data))            # held: 102
        ctx.set(dut.r_en, 1)
        ctx.set(dut.w_addr, 3)
        ctx.set(dut.w_data, 7)
        ctx.set(dut.w_en, 1)
        await ctx.tick()
        seen.append(ctx.get(dut.r_data))            # the old word: 103
        ctx.set(dut.w_en, 0)
        await ctx.tick()
        seen.append(ctx.get(dut.r_data))            # the new one: 7

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert seen == [102, 102, 103, 7]


@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_maps_to_a_bare_block_ram(family, tmp_path):
    """The plain synchronous port gets collision logic (the write's data and address in
    flip-flops, a comparator, a multiplexer per bit); the host-written memory's port gets none.
    (On an iCE40 one flip-flop and a LUT per bit remain: the read register's initial zero, which
    the block RAM's output does not have at power-up, until the first read.)"""
    yosys = toolchain.find("yosys")
    if not yosys.found:
        pytest.skip("yosys not found: " + yosys.spec.how_to_get)
    counts = {}
    for registered in (False, True):
        name = "registered" if registered else "plain"
        (tmp_path / f"{name}.il").write_text(rtlil.convert(HostWritten(registered=registered)))
        subprocess.run(
            [yosys.path, "-q", "-p", f"read_rtlil {name}.il; synth_{family} -top top -noabc9"
             if family == "ecp5" else f"read_rtlil {name}.il; synth_{family} -top top",
             "-o", f"{name}.json"],
            cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300)
        netlist = json.loads((tmp_path / f"{name}.json").read_text())
        counts[name] = Counter(cell["type"] for cell in netlist["modules"]["top"]["cells"].values())
    block_ram = {"ecp5": "DP16KD", "ice40": "SB_RAM40_4K"}[family]
    plain, registered = counts["plain"], counts["registered"]
    flip_flops = {"ecp5": ("TRELLIS_FF",), "ice40": ("SB_DFF", "SB_DFFE")}[family]
    assert plain[block_ram] == registered[block_ram] == 1, counts
    assert sum(plain[ff] for ff in flip_flops) > 16, plain      # at least the write's data
    if family == "ecp5":
        assert set(registered) == {block_ram}, registered
    else:
        assert sum(registered[ff] for ff in flip_flops) <= 1, registered
        assert registered["SB_LUT4"] <= 16 + 1, registered
