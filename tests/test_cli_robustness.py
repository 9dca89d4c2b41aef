"""User mistakes on the command line, each refused early with a message that names the file or
value and the way out (a robustness sweep's findings)."""

import json

import numpy as np
import pytest

from sparseforge.cli import main


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    """rich wraps at the console width; wide enough that a message stays on one line."""
    monkeypatch.setenv("COLUMNS", "500")


def _data(path, n=30, features=4, classes=3, **extra):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(n, features)).astype(np.float32),
              "y_train": np.arange(n) % classes}
    np.savez(path, **{**arrays, **extra})
    return path


def test_compress_names_data_given_as_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _data(tmp_path / "iris.npz")
    assert main(["compress", "iris.npz", "-o", "x.sfm"]) == 2
    err = capsys.readouterr().err
    assert ("iris.npz: is an .npz of data (x_train, y_train), not a model: pass it as "
            "--data iris.npz (and a model, or none for the default MLP)") in err
    assert "pickle" not in err and not (tmp_path / "x.sfm").exists()
    # An archive of data under another suffix is found by its contents; another .npz is
    # still not a model.
    (tmp_path / "iris.npz").rename(tmp_path / "iris.zip")
    assert main(["compress", "iris.zip", "-o", "x.sfm"]) == 2
    assert "iris.zip: is an .npz of data" in capsys.readouterr().err
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    assert main(["compress", "other.npz", "-o", "x.sfm"]) == 2
    assert ("other.npz: is an .npz archive of arrays (weights), not a model"
            in capsys.readouterr().err)


def test_sweep_names_data_given_as_the_model_or_the_spec(tmp_path, capsys):
    data = _data(tmp_path / "iris.npz")
    assert main(["sweep", "--model", str(data), "--out", str(tmp_path / "sweep")]) == 2
    assert (f"{data}: is an .npz of data (x_train, y_train), not a model: pass it as --data "
            f"{data} (and a model with --model, or none") in capsys.readouterr().err
    assert main(["sweep", str(data), "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert f"{data}: is an .npz of data (x_train, y_train), not a sweep spec" in err
    assert "utf-8" not in err and not (tmp_path / "sweep").exists()


def test_compress_refuses_an_output_that_names_a_folder_before_training(tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    _data(tmp_path / "d.npz")
    assert main(["compress", "--data", "d.npz", "-o", "newdir/"]) == 2
    err = capsys.readouterr().err
    assert "newdir/: names a folder; give the .sfm file to write, e.g. newdir/model.sfm" in err
    assert "epoch" not in err.lower() and not (tmp_path / "newdir").exists()
    (tmp_path / "made").mkdir()
    assert main(["compress", "--data", "d.npz", "-o", "made"]) == 2
    assert "cannot write made: it is a folder; give the .sfm file to write, e.g. made/model.sfm" \
        in capsys.readouterr().err


def test_compress_names_nan_labels_not_a_python_conversion_error(tmp_path, capsys):
    from sparseforge.commands.compress import _classes

    y = (np.arange(30) % 3).astype(np.float64)
    y[4] = np.nan
    data = _data(tmp_path / "d.npz")
    np.savez(data, x_train=np.load(data)["x_train"], y_train=y)
    assert main(["compress", "--data", str(data), "-o", str(tmp_path / "m.sfm")]) == 2
    err = capsys.readouterr().err
    assert "nan" in err.lower() and "y" in err.split("error:", 1)[1]
    assert "cannot convert" not in err and "Traceback" not in err
    assert not (tmp_path / "m.sfm").exists()
    # the class count skips what is not a number; no finite label at all: None
    assert _classes((None, y), (None, np.array([np.inf, 4.0]))) == 5
    assert _classes((None, np.array([np.nan]))) is None


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory):
    """A tiny compiled program (6 inputs, 3 classes), no Verilog."""
    from tests.test_golden import random_network
    from tests.test_program_cli import save_model

    folder = tmp_path_factory.mktemp("program")
    network = random_network(np.random.default_rng(7), [6, 8, 3], density=0.6)
    model = save_model(network, folder / "m.sfm")
    assert main(["compile", str(model), "--pes", "2", "-o", str(folder / "prog"),
                 "--no-verilog"]) == 0
    return folder / "prog"


def test_labels_of_a_single_column_are_taken_as_a_vector(tmp_path, capsys, monkeypatch,
                                                         program_dir):
    import sparseforge as sf
    from sparseforge.commands.common import check_labels
    from sparseforge.compiler.errors import InputError

    column = (np.arange(5) % 3).reshape(5, 1)
    assert check_labels(column, 5, 3, "y.npy").tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(InputError, match=r"y.npy: labels must be a vector \(or a single "
                                         r"column\), one class per input, not of shape \(5, 2\)"):
        check_labels(np.zeros((5, 2), np.int64), 5, 3, "y.npy")
    # sim --labels hands the simulation the vector
    seen = {}

    def simulate(program, x, *, labels=None, **_):
        seen["labels"] = labels
        raise RuntimeError("not simulated in this test")

    monkeypatch.setattr(sf, "simulate", simulate)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(5, 6)))
    np.save(tmp_path / "y.npy", column)
    assert main(["sim", str(program_dir), "--inputs", str(tmp_path / "x.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--build-dir", str(tmp_path / "b")]) == 2
    assert "not simulated in this test" in capsys.readouterr().err
    assert seen["labels"].shape == (5,) and seen["labels"].tolist() == [0, 1, 2, 0, 1]
    # --count cuts inputs and labels alike; labels of another set (more of them) were
    # accepted under a --count and scored the inputs against them.
    assert main(["sim", str(program_dir), "--inputs", str(tmp_path / "x.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--count", "3", "--build-dir", str(tmp_path / "b")]) == 2
    assert seen["labels"].tolist() == [0, 1, 2]
    np.save(tmp_path / "y9.npy", np.arange(9) % 3)
    for verb in ("sim", "report"):
        assert main([verb, str(program_dir), "--inputs", str(tmp_path / "x.npy"), "--labels",
                     str(tmp_path / "y9.npy"), "--count", "3", "--simulate" if verb == "report"
                     else "--build-dir", *([] if verb == "report" else [str(tmp_path / "b")])]
                    ) == 2
        assert "y9.npy: 9 labels for 5 inputs" in capsys.readouterr().err


def _simulation_of(program, x) -> dict:
    """What 'sparseforge sim --json' saves for inputs ``x``, its cycles the cycle model's."""
    from sparseforge.sim.simulate import predict

    timings = predict(program, program.quantize_input(x))

    def mean(attribute):
        return np.array([[getattr(t, attribute) for t in row] for row in timings],
                        dtype=float).mean(axis=0).round(2).tolist()

    return {"program": program.digest(), "simulator": "verilator", "inputs": len(x),
            "accuracy": None, "mismatches": 0,
            "cycles": {"per_layer_mean": mean("cycles"), "total_mean": sum(mean("cycles")),
                       "predicted_mean": mean("cycles"), "limit_mean": mean("limit"),
                       "bound_mean": mean("bound"), "overhead": [t.overhead for t in timings[0]]},
            "efficiency": 0.5}


def test_report_names_the_file_each_fault_comes_from(tmp_path, capsys, program_dir):
    from sparseforge.commands.common import load_npz
    from sparseforge.compiler.errors import InputError

    out = ["-o", str(tmp_path / "report")]
    np.save(tmp_path / "narrow.npy", np.zeros((4, 5)))
    assert main(["report", str(program_dir), "--inputs", str(tmp_path / "narrow.npy")]
                + out) == 2
    assert (f"{tmp_path / 'narrow.npy'}: inputs have 5 features per row, the model takes 6"
            in capsys.readouterr().err)
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    assert main(["report", str(program_dir), "--sim", str(tmp_path / "bad.json")] + out) == 2
    assert (f"{tmp_path / 'bad.json'}: the simulation figures lack or mangle 'cycles'"
            in capsys.readouterr().err)
    assert main(["report", str(program_dir), "--build", str(tmp_path / "bad.json")] + out) == 2
    assert (f"{tmp_path / 'bad.json'}: the build figures lack or mangle 'board'"
            in capsys.readouterr().err)
    # an array of Python objects is named, in an .npz by its key
    np.save(tmp_path / "objects.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    assert main(["report", str(program_dir), "--inputs", str(tmp_path / "objects.npy")]
                + out) == 2
    assert (f"{tmp_path / 'objects.npy'}: the inputs hold Python objects (dtype object)"
            in capsys.readouterr().err)
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 2)),
             y_train=np.array([1, None], dtype=object))
    with pytest.raises(InputError, match=r"d.npz: array 'y_train' holds Python objects .*"
                                         r"np.asarray\(y_train, dtype=np.int64\)"):
        load_npz(tmp_path / "d.npz")
    assert not (tmp_path / "report").exists()


def test_report_refuses_inputs_other_than_the_simulated_ones(tmp_path, capsys, program_dir):
    import json

    import sparseforge as sf

    program = sf.load_program(program_dir)
    x = np.random.default_rng(1).normal(size=(8, 6))
    (tmp_path / "sim.json").write_text(json.dumps(_simulation_of(program, x)))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "other.npy", np.abs(x) * 3)
    command = ["report", str(program_dir), "--sim", str(tmp_path / "sim.json"), "-o",
               str(tmp_path / "report")]
    assert main(command + ["--inputs", str(tmp_path / "other.npy")]) == 2
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'other.npy'}: not the inputs {tmp_path / 'sim.json'} was simulated "
            f"on (layer") in err
    assert "pass those with --inputs (the first 8 are used), or simulate these" in err
    assert main(command + ["--inputs", str(tmp_path / "x.npy"), "--count", "5"]) == 2
    assert (f"{tmp_path / 'sim.json'}: the simulation ran 8 inputs but only 5 are given "
            f"(--count 5 of {tmp_path / 'x.npy'})") in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    assert main(command + ["--inputs", str(tmp_path / "x.npy")]) == 0
    assert (tmp_path / "report" / "report.html").is_file()


def test_report_says_when_labels_are_not_used(tmp_path, capsys, monkeypatch, program_dir):
    import warnings

    import sparseforge as sf
    from sparseforge.compiler.errors import InputWarning

    np.save(tmp_path / "x.npy", np.random.default_rng(2).normal(size=(4, 6)))
    np.save(tmp_path / "y.npy", np.array([[0], [1], [2], [0]]))
    command = ["report", str(program_dir), "-o", str(tmp_path / "report"), "--labels",
               str(tmp_path / "y.npy")]
    assert main(command) == 2
    assert (f"--labels {tmp_path / 'y.npy'}: labels go with the inputs they label; pass those "
            f"with --inputs") in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        assert main(command + ["--inputs", str(tmp_path / "x.npy")]) == 0
    assert (f"warning: --labels {tmp_path / 'y.npy'} is not used: labels give the accuracy of "
            f"a simulation run now (--simulate), and none runs") in capsys.readouterr().err
    # with --simulate they are used, a single column as the vector it holds
    seen = {}

    def simulate(program, x, *, labels=None, **_):
        seen["labels"] = labels
        raise ValueError("not simulated in this test")

    monkeypatch.setattr(sf, "simulate", simulate)
    assert main(command + ["--inputs", str(tmp_path / "x.npy"), "--simulate"]) == 2
    assert "not simulated in this test" in capsys.readouterr().err
    assert seen["labels"].tolist() == [0, 1, 2, 0]


def test_fit_advice_names_the_most_pes_the_fit_check_accepts(tmp_path, capsys):
    import sparseforge as sf
    from sparseforge.compiler.resources import DoesNotFit
    from tests.test_golden import random_network
    from tests.test_program_cli import save_model

    # 4 PEs do not fit the UP5K, nor 3 (more entries per PE), but 2 do: the advice said
    # "--pes 3 or so".
    network = random_network(np.random.default_rng(0), [300, 128, 12], density=0.08)
    model = save_model(network, tmp_path / "m.sfm")
    for pes in ("4", "3"):
        assert main(["compile", str(model), "--pes", pes, "--board", "icebreaker", "-o",
                     str(tmp_path / "p"), "--no-verilog"]) == 2
        assert ("ways out: fewer PEs (--pes 2, or pes=2 in sf.compile: the most that fit)"
                in capsys.readouterr().err)
    assert main(["compile", str(model), "--pes", "2", "--board", "icebreaker", "-o",
                 str(tmp_path / "p"), "--no-verilog"]) == 0
    # down to one PE; and said when not even one fits
    one = random_network(np.random.default_rng(3), [200, 256, 10], density=0.11)
    with pytest.raises(DoesNotFit, match=r"fewer PEs \(--pes 1, or pes=1 in sf.compile"):
        sf.compile(one, 2, "icebreaker", verify=False)
    sf.compile(one, 1, "icebreaker", verify=False)
    none = random_network(np.random.default_rng(3), [200, 256, 10], density=0.2)
    with pytest.raises(DoesNotFit, match=r"\(fewer PEs will not do: with 1 PE it does not fit "
                                         r"the iCE40UP5K either\)"):
        sf.compile(none, 4, "icebreaker", verify=False)


def test_without_a_pe_count_a_board_gets_the_most_pes_that_fit(tmp_path, capsys):
    import warnings

    import sparseforge as sf
    from sparseforge.compiler.errors import InputWarning
    from sparseforge.compiler.resources import DoesNotFit
    from tests.test_golden import random_network
    from tests.test_program_cli import save_model

    # 8 PEs do not fit the UP5K (nor 3 to 7): with no --pes the compiler takes 2 rather than
    # refusing the default, and says so with the other ways out; an explicit count is still
    # refused.
    network = random_network(np.random.default_rng(0), [300, 128, 12], density=0.08)
    with pytest.raises(DoesNotFit, match=r"the most that fit"):
        sf.compile(network, 8, "icebreaker", verify=False)
    with pytest.warns(InputWarning, match=r"8 PEs do not fit the iCE40UP5K by the estimate: "
                                          r"compiled for 2, the most that fit \(pes=N, --pes "
                                          r"N, to choose\); other ways out: narrower "
                                          r"accumulators: compress with --max-acc-bits 16"):
        assert sf.compile(network, board="icebreaker", verify=False).config.pes == 2
    assert sf.compile(network, verify=False).config.pes == 8
    model = save_model(network, tmp_path / "m.sfm")
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        assert main(["compile", str(model), "--board", "icebreaker", "-o", str(tmp_path / "p"),
                     "--no-verilog"]) == 0
    captured = capsys.readouterr()
    assert "Program for 2 PEs" in captured.out
    assert ("warning: 8 PEs do not fit the iCE40UP5K by the estimate: compiled for 2, the most "
            "that fit" in " ".join(captured.err.split()))
    # Where not even one PE fits, the refusal is the default's, with its advice.
    none = random_network(np.random.default_rng(3), [200, 256, 10], density=0.2)
    with pytest.raises(DoesNotFit, match=r"(?s)the engine \(8 PEs, .*fewer PEs will not do"):
        sf.compile(none, board="icebreaker", verify=False)


def test_compress_help_explains_act_bits_and_seed(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
             if line.strip().startswith("--")}
    assert "width of the activations" in lines["--act-bits"]
    assert "seed of the training, the k-means and the default model" in lines["--seed"]


def test_sim_labels_without_inputs_are_refused_and_the_default_data_is_named(
        tmp_path, capsys, monkeypatch):
    # A 64-input model of other data would otherwise be scored on the digits, under the
    # name of the user's labels file.
    import sparseforge as sf
    from tests.test_golden import random_network
    from tests.test_program_cli import save_model

    network = random_network(np.random.default_rng(8), [64, 8, 10], density=0.6)
    model = save_model(network, tmp_path / "m.sfm")
    assert main(["compile", str(model), "--pes", "2", "-o", str(tmp_path / "prog"),
                 "--no-verilog"]) == 0
    np.save(tmp_path / "y.npy", np.zeros(5, np.int64))
    assert main(["sim", str(tmp_path / "prog"), "--labels", str(tmp_path / "y.npy")]) == 2
    assert "needs --inputs: without --inputs the simulation runs the bundled digits" in \
        capsys.readouterr().err

    def simulate(*_, **__):
        raise RuntimeError("not simulated in this test")

    monkeypatch.setattr(sf, "simulate", simulate)
    assert main(["sim", str(tmp_path / "prog"), "--count", "3", "--build-dir",
                 str(tmp_path / "b")]) == 2
    assert "no --inputs: the bundled digits test split" in capsys.readouterr().err


def test_another_programs_build_is_not_reported_or_flashed_as_this_ones(tmp_path, capsys,
                                                                         program_dir):
    """A bitstream folder copied from another program: the report showed its Fmax and DSPs
    beside this engine, and flash offered its top.bin."""
    import shutil

    from sparseforge.boards.build import Build, _record

    program = tmp_path / "program"
    shutil.copytree(program_dir, program)
    folder = program / "bitstream"
    (folder / "attempt1").mkdir(parents=True)
    (folder / "attempt1" / "top.bin").write_bytes(b"\xff\x00\x00\xff")
    built = Build("icebreaker", folder / "attempt1" / "top.bin", 42.0, 33.0, {}, 1.0, folder,
                  program="0123456789abcdef")
    (folder / "build.json").write_text(json.dumps(_record(built, folder)))
    assert main(["report", str(program), "-o", str(tmp_path / "report")]) == 2
    assert ("build.json is the build of another program (digest 0123456789abcdef"
            in capsys.readouterr().err)
    assert main(["flash", str(program), "--dry-run"]) == 2
    assert "build.json is the build of another program (digest 0123456789abcdef" in \
        " ".join(capsys.readouterr().err.split())


def test_compile_does_not_replace_a_program_folder_holding_the_users_files(tmp_path, capsys,
                                                                           program_dir):
    """compile -o DIR replaced the folder whole, the model it was compiling and the user's
    inputs kept there with it."""
    import shutil

    program = tmp_path / "program"
    shutil.copytree(program_dir, program)
    shutil.copyfile(program_dir.parent / "m.sfm", program / "model.sfm")
    assert main(["compile", str(program / "model.sfm"), "-o", str(program)]) == 2
    assert "model.sfm lies inside" in capsys.readouterr().err
    assert (program / "model.sfm").exists()
    shutil.move(program / "model.sfm", tmp_path / "model.sfm")
    np.save(program / "x_test.npy", np.zeros((2, 6)))
    assert main(["compile", str(tmp_path / "model.sfm"), "-o", str(program)]) == 2
    assert "holds files no sparseforge verb wrote there (x_test.npy)" in \
        " ".join(capsys.readouterr().err.split())
    (program / "x_test.npy").unlink()
    (program / "sim.json").write_text("{}")              # a verb's: replaced with the program
    assert main(["compile", str(tmp_path / "model.sfm"), "-o", str(program),
                 "--no-verilog"]) == 0
    assert not (program / "sim.json").exists()


def test_a_simulator_built_with_waves_is_kept_apart_from_the_plain_one(tmp_path, monkeypatch,
                                                                       program_dir):
    """sim --waves built into the plain simulator's folder: the next plain run (or a failed
    waves build) built it again, 30 s where 3 s were the cached run."""
    from pathlib import Path

    from sparseforge.compiler.program import load_program
    from sparseforge.sim import rtl

    program = load_program(program_dir)
    folders = []

    def cocotb(sources, toplevel, module, *, build_dir, **_):
        folders.append(Path(build_dir).name)
        raise AssertionError("not simulated in this test")

    monkeypatch.setattr(rtl, "run_cocotb", cocotb)
    case = rtl.RtlCase("one", program.image, np.zeros((1, 6), np.int64),
                       np.zeros((1, 3), np.int64))
    for waves in (False, True):
        with pytest.raises(RuntimeError, match="no results"):
            rtl.run_rtl(program.config, [case], build_dir=tmp_path, waves=waves)
    plain, traced = folders
    assert plain.startswith("verilator_") and traced == plain.replace("verilator_",
                                                                        "verilator_waves_")


def test_a_program_folder_under_a_file_names_the_file(tmp_path, capsys, program_dir):
    # It said "File exists".
    (tmp_path / "afile").write_text("")
    assert main(["compile", str(program_dir.parent / "m.sfm"), "-o",
                 str(tmp_path / "afile" / "sub"), "--no-verilog"]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in \
        " ".join(capsys.readouterr().err.split())


def test_a_report_without_inputs_says_there_are_no_cycles(tmp_path, capsys, program_dir):
    # A program of 6 inputs has no default inputs: the cycles, efficiency and latency rows
    # were left out without a word, and the notes spoke of cycles.
    assert main(["report", str(program_dir), "-o", str(tmp_path / "report"), "--json"]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    text = json.dumps(summary)
    assert "no inputs to count them on: give some (--inputs, inputs=)" in text


def test_the_reports_cycles_are_the_simulations_total_not_the_sum_of_rounded_layers():
    # sim printed 218.5 (218.5438) and report 218.6, the sum of the rounded layer means.
    from sparseforge.run_report import sim_figures

    layers = [100.27, 118.28]
    payload = {"simulator": "verilator", "inputs": 3, "accuracy": None, "mismatches": 0,
               "efficiency": 0.5,
               "cycles": {"per_layer_mean": layers, "total_mean": 218.5438,
                          "predicted_mean": layers, "limit_mean": layers,
                          "bound_mean": layers, "overhead": [20, 20]}}
    assert sim_figures(payload).total == 218.5438
    del payload["cycles"]["total_mean"]                  # a file from before it was kept
    assert sim_figures(payload).total == 218.55
