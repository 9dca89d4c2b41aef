"""``sparseforge compile``: writes the program and a report; --json prints one object."""

import json

import numpy as np
import pytest

from sparseforge.cli import main
from sparseforge.compiler.compress.model import CompressedModel
from sparseforge.compiler.compress.accounting import account
from sparseforge.compiler.ir import Linear, Network
from sparseforge.compiler.program import load_program
from tests.test_golden import random_network


def save_model(network, path):
    """Save the quantized ``network`` (and its float twin) as a .sfm model at ``path``."""
    float_network = Network(tuple(
        Linear(layer.name, layer.weights * 2.0 ** -layer.weight_format.frac,
               layer.bias * 2.0 ** -layer.accumulator_frac, layer.relu)
        for layer in network.layers))
    CompressedModel(network, float_network, account(network)).save(path)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    network = random_network(np.random.default_rng(31), [64, 48, 10], density=0.15)
    return save_model(network, tmp_path_factory.mktemp("model") / "m.sfm")


def test_compile_json(tmp_path, model_file, capsys):
    status = main(["compile", str(model_file), "--pes", "4", "-o", str(tmp_path / "prog"),
                   "--no-verilog", "--json"])
    captured = capsys.readouterr()
    assert status == 0
    payload = json.loads(captured.out)                 # exactly one JSON object on stdout
    assert payload["pes"] == 4 and payload["config"]["pes"] == 4
    # 8 of the 48 hidden units have no outgoing weight: the compiler drops them.
    assert [layer["shape"] for layer in payload["layers"]] == [[40, 64], [10, 40]]
    assert payload["dead_units_removed"] == [{"layer": "fc0", "units": 48, "kept": 40}]
    program = load_program(tmp_path / "prog")
    assert payload["entries"] == sum(len(e) for e in program.image.entries)
    assert {row["part"] for row in payload["resources"]} == {"iCE40UP5K", "LFE5U-85F"}
    assert json.loads((tmp_path / "prog" / "report.json").read_text()) == payload
    assert "Program for 4 PEs" in captured.err            # the table went to stderr


def test_compile_table_with_board(tmp_path, model_file, capsys):
    status = main(["compile", str(model_file), "--pes", "2", "--board", "ulx3s-85f", "-o",
                   str(tmp_path / "prog"), "--no-verilog"])
    out = capsys.readouterr().out
    assert status == 0
    assert "fc0" in out and "40x64" in out and "LFE5U-85F" in out
    assert "fc0: 8 of its 48 units removed" in out
    assert "Estimated resources" in out


def test_compile_refuses_a_board_that_is_too_small(tmp_path, model_file, capsys):
    status = main(["compile", str(model_file), "--pes", "16", "--board", "icebreaker", "-o",
                   str(tmp_path / "prog"), "--no-verilog", "--json"])
    captured = capsys.readouterr()
    assert status == 2 and "does not fit" in json.loads(captured.out)["error"]
    assert "does not fit the iCE40UP5K" in captured.err and "DSP: needs about 16" in captured.err
    assert not (tmp_path / "prog").exists()


def test_compile_reports_a_bad_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.sfm"
    bad.write_bytes(b"not a zip")
    assert main(["compile", str(bad), "-o", str(tmp_path / "prog"), "--no-verilog"]) == 2
    assert "bad.sfm" in capsys.readouterr().err


def test_compile_writes_verilog_built_for_the_board(tmp_path, model_file, capsys):
    status = main(["compile", str(model_file), "--pes", "2", "--board", "icebreaker", "-o",
                   str(tmp_path / "prog"), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert status == 0 and payload["verilog"] == str(tmp_path / "prog" / "engine.v")
    assert "module engine" in (tmp_path / "prog" / "engine.v").read_text()
    assert load_program(tmp_path / "prog").board == "icebreaker"


def test_compile_says_which_inputs_the_host_sends(tmp_path, capsys):
    from tests.test_dead_units import with_unread_inputs
    network = with_unread_inputs(np.random.default_rng(32), [30, 20, 4], unread=(1, 2, 29))
    model = save_model(network, tmp_path / "m.sfm")
    assert main(["compile", str(model), "--pes", "2", "-o", str(tmp_path / "prog"),
                 "--no-verilog"]) == 0
    assert ("inputs: 3 of the model's 30 are read by no weight; the host sends the other 27"
            in capsys.readouterr().out)
    assert main(["compile", str(model), "--pes", "2", "-o", str(tmp_path / "json"),
                 "--no-verilog", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["inputs_removed"] == {"inputs": 30, "kept": 27}
    assert payload["layers"][0]["shape"][1] == 27
    assert main(["compile", str(model), "--pes", "2", "-o", str(tmp_path / "all"),
                 "--no-verilog", "--json", "--keep-dead-units"]) == 0
    assert "inputs_removed" not in json.loads(capsys.readouterr().out)


def test_compile_takes_the_write_back_lanes_and_zero_skipping(tmp_path, model_file, capsys):
    assert main(["compile", str(model_file), "--pes", "8", "--writeback-lanes", "2", "-o",
                 str(tmp_path / "shared"), "--no-verilog"]) == 0
    assert load_program(tmp_path / "shared").config.writeback_period == 4
    assert "requantizers shared by 4 PEs" in capsys.readouterr().out
    assert main(["compile", str(model_file), "--pes", "4", "--board", "icebreaker",
                 "--skip-zeros", "-o", str(tmp_path / "skip"), "--no-verilog"]) == 0
    assert load_program(tmp_path / "skip").config.skip_zeros
    assert "zeros skipped" in capsys.readouterr().out
    status = main(["compile", str(model_file), "--pes", "8", "--writeback-lanes", "3", "-o",
                   str(tmp_path / "bad"), "--no-verilog"])
    assert status == 2 and "writeback_lanes must divide pes (8)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
