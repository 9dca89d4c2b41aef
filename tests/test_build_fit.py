"""sf.build when the design does not fit, and with several nextpnr seeds: the user's error
with the counts and the ways out, nothing half-written, every seed's figure recorded."""

import json
from pathlib import Path

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.boards import build as build_module
from sparseforge.boards.bitstream import (
    BitstreamBuild,
    DoesNotPlace,
    _pnr_line,
    placement_failure,
)
from sparseforge.boards.nextpnr import parse_nextpnr_log
from sparseforge.compiler.configure import DoesNotFit
from sparseforge.compiler.errors import UserError
from sparseforge.compiler.resources import LINK_FRAME_BYTES, fit_advice

# nextpnr-ice40's log of the digits engine (19-bit accumulators, 4 PEs) after packing.
OVERFULL_LOG = """\
Info: Packing constants..
Info: Device utilisation:
Info: 	         ICESTORM_LC:    5987/   5280   113%
Info: 	        ICESTORM_RAM:      18/     30    60%
Info: 	               SB_IO:       5/     39    12%
Info: 	        ICESTORM_DSP:       4/      8    50%
Info: 	      ICESTORM_SPRAM:       2/      4    50%
"""
# A full part that nextpnr's placer gives up on.
GAVE_UP_LOG = OVERFULL_LOG.replace("5987/   5280   113%", "5270/   5280    99%") + (
    "Info: Running main analytical placer, max placement attempts per cell = 2777724.\n"
    "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5270 ICESTORM_LCs\n")
FITTING_LOG = OVERFULL_LOG.replace("5987/   5280   113%", "4662/   5280    88%") + (
    "Info: Max frequency for clock                      'clk': 41.02 MHz (PASS at 33.03 MHz)\n"
    "Info: Max frequency for clock 'link.link_clock_$glb_clk': 33.92 MHz (PASS at 16.50 MHz)\n")


def test_a_packed_design_beyond_the_part_is_a_does_not_fit_with_the_counts():
    error = placement_failure(OVERFULL_LOG, "iCE40UP5K")
    assert isinstance(error, DoesNotPlace) and isinstance(error, UserError)
    assert str(error).startswith("does not fit: 5987 of 5280 logic cells (113%) on the "
                                 "iCE40UP5K")
    assert (error.resource, error.used, error.available) == ("LUT", 5987, 5280)
    assert placement_failure(FITTING_LOG, "iCE40UP5K") is None


def test_a_placer_that_gives_up_on_a_full_part_is_a_does_not_fit_too():
    error = placement_failure(GAVE_UP_LOG, "iCE40UP5K")
    assert "does not fit: 5270 of 5280 logic cells (99%)" in str(error)
    assert "Failed to expand region" not in str(error)
    # Only for a run that failed: the same log of a finished run is not a refusal.
    assert placement_failure(GAVE_UP_LOG, "iCE40UP5K", failed=False) is None


def test_nextpnr_lines_for_seeds_and_packing():
    line = ('"$NEXTPNR_ICE40" --quiet --timing-allow-fail --log top.tim --up5k --package sg48 '
            '--json top.json --pcf top.pcf --asc top.asc')
    assert _pnr_line(line, None, False) == line
    assert _pnr_line(line, 3, False) == line + " --seed 3"
    packed = _pnr_line(line, None, True)
    assert packed.endswith("--pack-only") and "--asc" not in packed
    assert "--json top.json" in packed and "--log top.tim" in packed


def _program():
    from sparseforge.compiler.ir import QuantizedNetwork
    from sparseforge.verify import _network
    network = _network(np.random.default_rng(3), [16, 24, 4], 0.3, code_bits=3)
    assert isinstance(network, QuantizedNetwork)
    return sf.compile(network, pes=2, board="icebreaker")


def _used(top):
    """The fakes never elaborate the board top: say so, or Amaranth warns when it is
    collected (in whichever test runs then)."""
    top._MustUse__silence = True


def _fake_bitstream(tmp_fmax, seeds_seen):
    def fake(platform, top, build_dir, *, seeds=(None,), jobs=None, **_):
        _used(top)
        build_dir = Path(build_dir)
        build_dir.mkdir(parents=True)
        seeds_seen.append(tuple(seeds))
        figures = {seed: tmp_fmax + index for index, seed in enumerate(seeds)}
        best = max(figures, key=figures.get)
        folder = build_dir if len(seeds) == 1 else build_dir / f"seed-{best or 'default'}"
        folder.mkdir(exist_ok=True)
        (folder / "top.bin").write_bytes(b"\0" * 8)
        log = FITTING_LOG.replace("41.02", f"{figures[best]:.2f}")
        return BitstreamBuild(folder / "top.bin", parse_nextpnr_log(log), folder, 1.0,
                              [{"seed": s, "fmax_mhz": f, "seconds": 1.0}
                               for s, f in figures.items()], best)
    return fake


def test_build_tries_seeds_and_records_every_figure(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(build_module, "build_bitstream", _fake_bitstream(40.0, seen))
    result = sf.build(_program(), "icebreaker", build_dir=tmp_path / "b", seeds=3)
    assert seen == [(None, 2, 3)]
    assert result.fmax_mhz == pytest.approx(42.0)        # the best of 40, 41 and 42 MHz
    assert result.seed == 3 and result.bitstream == tmp_path / "b" / "attempt1" / "seed-3" / \
        "top.bin" and result.bitstream.exists()
    record = json.loads((tmp_path / "b" / "build.json").read_text())
    assert record["seed"] == 3
    assert [s["seed"] for s in record["seeds"]] == ["default", 2, 3]
    assert [s["fmax_mhz"] for s in record["seeds"]] == [40.0, 41.0, 42.0]
    assert record["attempts"][0]["seeds"] == record["seeds"]
    assert record["bitstream"] == "attempt1/seed-3/top.bin"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(UserError, match="seeds must be a whole number of 1 or more"):
        sf.build(_program(), "icebreaker", build_dir=tmp_path / "c", seeds=0)


def test_the_api_and_the_command_line_place_two_seeds_by_default(tmp_path, monkeypatch):
    from sparseforge.cli import main

    seen = []
    monkeypatch.setattr(build_module, "build_bitstream", _fake_bitstream(40.0, seen))
    assert build_module.DEFAULT_SEEDS == 2
    sf.build(_program(), "icebreaker", build_dir=tmp_path / "api")
    _program().save(tmp_path / "program")
    assert main(["build", str(tmp_path / "program"), "--json"]) == 0
    assert main(["build", str(tmp_path / "program"), "--seeds", "1", "-o",
                 str(tmp_path / "once"), "--json"]) == 0
    assert seen == [(None, 2), (None, 2), (None,)]


def test_a_program_built_for_another_part_than_its_own_is_warned_of(tmp_path, monkeypatch):
    from sparseforge.compiler.errors import InputWarning

    monkeypatch.setattr(build_module, "build_bitstream", _fake_bitstream(40.0, []))
    program = _program()
    assert program.board == "icebreaker"
    with pytest.warns(InputWarning, match="compiled for icebreaker .*--board ulx3s-85f"):
        sf.build(program, "ulx3s-85f", build_dir=tmp_path / "b")


def test_a_program_for_a_larger_part_is_refused_by_the_estimate_before_synthesis(
        tmp_path, monkeypatch):
    from tests.test_golden import random_network

    seen = []
    monkeypatch.setattr(build_module, "build_bitstream", _fake_bitstream(40.0, seen))
    program = sf.compile(random_network(np.random.default_rng(5), [64, 96, 10], density=0.5),
                         pes=32, board="ulx3s-85f")
    with pytest.raises(DoesNotFit, match=r"(?s)does not fit the iCE40UP5K \(estimate\):\n.*\nthe "
                                         r"program was compiled for ulx3s-85f: compile it "
                                         r"with --board icebreaker for an engine shaped for "
                                         r"this part \(other ways out: ") as raised:
        sf.build(program, "icebreaker", build_dir=tmp_path / "b")
    # The generic ways out came first, the one that matters for this program last.
    assert str(raised.value).count("ways out") == 1
    assert seen == [] and not (tmp_path / "b").exists()
    # Compiled for no board, it was checked against no part: synthesis started.
    boardless = sf.compile(random_network(np.random.default_rng(5), [64, 96, 10],
                                          density=0.5), pes=32)
    with pytest.raises(DoesNotFit, match=r"(?s)does not fit the iCE40UP5K \(estimate\):\n.*\n"
                                         r"the program was compiled for no board: compile it "
                                         r"with --board icebreaker"):
        sf.build(boardless, "icebreaker", build_dir=tmp_path / "b")
    assert seen == [] and not (tmp_path / "b").exists()


@pytest.mark.parametrize("frequency", [0, 0.0, -5, float("nan"), float("inf"), "33"])
def test_a_clock_that_is_not_a_positive_frequency_is_refused(tmp_path, frequency):
    # 0 was taken for "not given" and built at the board's clock.
    with pytest.raises(UserError, match="clock frequency must be a positive number of MHz"):
        sf.build(_program(), "icebreaker", build_dir=tmp_path / "b", frequency_mhz=frequency)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("board,frequency", [("icebreaker", 100000), ("icebreaker", 8),
                                             ("ulx3s-85f", 500)])
def test_a_clock_the_boards_pll_cannot_make_is_refused_before_building(tmp_path, board,
                                                                       frequency):
    with pytest.raises(UserError, match=f"PLL makes .* MHz, not {frequency} "):
        sf.build(_program(), board, build_dir=tmp_path / "b", frequency_mhz=frequency)
    assert not (tmp_path / "b").exists()


def test_a_build_that_does_not_place_leaves_the_old_build_and_names_the_ways_out(
        tmp_path, monkeypatch):
    folder = tmp_path / "bitstream"
    folder.mkdir()
    (folder / "build.json").write_text('{"board": "icebreaker", "bitstream": "old.bin"}')

    def overfull(platform, top, build_dir, **_):
        _used(top)
        Path(build_dir).mkdir(parents=True)
        (Path(build_dir) / "top.tim").write_text(OVERFULL_LOG)     # half a build
        raise placement_failure(OVERFULL_LOG, platform.device)

    monkeypatch.setattr(build_module, "build_bitstream", overfull)
    program = _program()
    with pytest.raises(DoesNotPlace) as caught:
        sf.build(program, "icebreaker", build_dir=folder)
    message = str(caught.value)
    assert message.startswith("does not fit: 5987 of 5280 logic cells (113%) on the iCE40UP5K")
    assert "ways out: fewer PEs (--pes 1" in message and "a bigger board (--board" in message
    assert "Failed to expand" not in message
    # The earlier build is as it was; nothing of the failed one is left beside it.
    assert sorted(p.name for p in folder.iterdir()) == ["build.json"]
    assert json.loads((folder / "build.json").read_text())["bitstream"] == "old.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bitstream"]


def test_a_failed_synthesis_keeps_its_logs_and_says_why(tmp_path, monkeypatch):
    from subprocess import CompletedProcess

    from sparseforge.boards.bitstream import BuildError, _failure

    def crashing(platform, top, build_dir, **_):
        _used(top)
        Path(build_dir).mkdir(parents=True)
        log = Path(build_dir) / "top.rpt"
        log.write_text("\n".join([f"2.47.{n}. Executing pass {n}." for n in range(40)]))
        crash = CompletedProcess([], 134, "", "ERROR: Assert `cell != nullptr' failed in "
                                 "kernel/rtlil.cc:1234.\n")
        raise BuildError(_failure("the ecp5 synthesis of top", crash, Path(build_dir), log))

    monkeypatch.setattr(build_module, "build_bitstream", crashing)
    folder = tmp_path / "bitstream"
    with pytest.raises(BuildError) as caught:
        sf.build(_program(), "icebreaker", build_dir=folder)
    message = str(caught.value)
    # Yosys's crash (on its stderr, after the log's last line) is in the message ...
    assert "Assert `cell != nullptr' failed" in message
    # ... and the logs it names are kept, beside the build folder, which was not made.
    kept = tmp_path / "bitstream.failed"
    assert f"in {kept}" in message and (kept / "attempt1" / "top.rpt").is_file()
    assert not folder.exists() and ".tmp" not in message


def test_the_cli_reports_a_placement_failure_as_a_user_error(tmp_path, monkeypatch, capsys):
    from sparseforge.cli import main

    def overfull(platform, top, build_dir, **_):
        _used(top)
        raise placement_failure(OVERFULL_LOG, platform.device)

    monkeypatch.setattr(build_module, "build_bitstream", overfull)
    _program().save(tmp_path / "program")
    status = main(["build", str(tmp_path / "program"), "--json"])
    assert status == 2
    printed = json.loads(capsys.readouterr().out)
    assert printed["error"].startswith("does not fit: 5987 of 5280 logic cells")
    assert "ways out:" in printed["error"]


def test_fit_advice_names_the_ways_out():
    from sparseforge.compiler.config import EngineConfig
    from sparseforge.compiler.parts import part
    wide = EngineConfig(pes=8, scan_lanes=2, act_bits=8, acc_bits=20, acc_memory_bits=16,
                        max_rows=16, writeback_lanes=2)
    advice = fit_advice(wide, part("iCE40UP5K"), {"LUT"})
    assert advice.startswith("ways out: fewer PEs (--pes 4 or so)")
    for way in ("--max-acc-bits 16", "--scan-lanes 1", "writeback_lanes=1",
                "a bigger board (--board ulx3s-12f: LFE5U-12F)"):
        assert way in advice


def test_the_link_buffer_in_the_estimate_takes_the_board_tops_blocks():
    from sparseforge.boards import protocol
    from sparseforge.boards.gateware.frame_receiver import bank_bits
    from sparseforge.compiler.resources import Memory, brams_for
    # Two frames, one per half (the one executing and the next arriving): 512 bytes.
    board = Memory("link", 2 << bank_bits(protocol.MAX_PAYLOAD), 8)
    for family in ("ice40", "ecp5"):
        assert brams_for(Memory("link", LINK_FRAME_BYTES, 8), family) == brams_for(board, family)


@pytest.mark.slow
@pytest.mark.toolchain
def test_a_design_too_big_for_the_up5k_is_refused_by_the_check_and_by_the_build(tmp_path):
    """A random MLP at 8 PEs: about 6100 logic cells and 38 block RAMs estimated; the fit
    check refuses it, and built anyway (the check off) nextpnr cannot place it: reported with
    nextpnr's counts, the build folder left empty.  (Yosys: a minute or two.)"""
    from sparseforge.verify import _network
    network = _network(np.random.default_rng(1), [96, 192, 10], 0.12, code_bits=4)
    with pytest.raises(DoesNotFit, match="does not fit the iCE40UP5K"):
        sf.compile(network, pes=8, board="icebreaker")
    program = sf.compile(network, pes=8, board="icebreaker", fit_check=False)
    with pytest.raises(DoesNotPlace) as caught:
        sf.build(program, "icebreaker", build_dir=tmp_path / "bitstream")
    message = str(caught.value)
    assert message.startswith("does not fit: ") and " on the iCE40UP5K after packing" in message
    assert caught.value.used > caught.value.available
    assert "ways out: fewer PEs" in message
    assert list(tmp_path.iterdir()) == []


def test_a_given_engine_that_does_not_fit_is_told_the_most_pes_that_do():
    from sparseforge.verify import _network
    network = _network(np.random.default_rng(1), [96, 192, 10], 0.12, code_bits=4)
    engine = sf.compile(network, pes=8, board="icebreaker", fit_check=False).config
    with pytest.raises(DoesNotFit, match=r"ways out: fewer PEs \(--pes \d, or pes=\d in "
                                         r"sf.compile: the most that fit\)"):
        sf.compile(network, config=engine, board="icebreaker")


def test_a_stopped_build_stops_the_tools_its_shell_started(tmp_path):
    """SIGTERM to `sparseforge build` during synthesis ended the shell and left Yosys running
    on its own: the build's shell runs in a process group of its own, killed whole."""
    import os
    import subprocess
    import time

    from sparseforge.boards.bitstream import _Script

    script = _Script([], ["true"], "true", [])
    with pytest.raises(subprocess.TimeoutExpired):
        # A tool the shell started (the way Yosys runs under Amaranth's script).
        script.run(["sleep 60 & echo $! > tool.pid; wait"], tmp_path, dict(os.environ), 1.0)
    tool = int((tmp_path / "tool.pid").read_text())
    for _ in range(50):
        try:
            os.kill(tool, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(tool, 9)
        pytest.fail("the tool the shell started outlived the build")
    assert script.run(["echo done"], tmp_path, dict(os.environ), 10.0).stdout == "done\n"
