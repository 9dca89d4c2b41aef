"""Design-space sweeps on Ray (sparseforge/sweep.py, ``sparseforge sweep``).

The spec, the Pareto front and the results store are checked alone; the sweeps run on a real
local Ray session of two CPUs.  The model is a small digits MLP trained here and compressed
with few epochs, so a point takes seconds: what is tested is the sweep's machinery (shared
compressions, failures as data, the store's resume, a dead worker's retry, the report), not
the figures of the default model.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from sparseforge.cli import main  # noqa: E402
from sparseforge.sweeps import (  # noqa: E402
    ResultStore,
    SweepSpec,
    model_digest,
    pareto_front,
    sweep,
)

# A few epochs each: the points are seconds, the machinery is what is under test.
FAST = {"prune_steps": 2, "prune_epochs": 2, "final_epochs": 4, "share_epochs": 4}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def small_model():
    from sparseforge.compiler.compress.digits import digits_mlp, load_digits_split
    from sparseforge.compiler.compress.training import TrainConfig, train

    model = digits_mlp(32, seed=0)
    train(model, load_digits_split()[0], TrainConfig(epochs=5, seed=0))
    return model


# ---- no Ray -------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"pes": (0,)}, "pes must be between 1 and 64, not 0"),
    ({"sparsity": (0.8, 1.5)}, "sparsity must be in [0, 1), not 1.5"),
    ({"weight_bits": (9,)}, "weight_bits must be an integer from 1 to 8, not 9"),
    ({"boards": ("icebreaker", "nosuchboard")}, "nosuchboard"),
    ({"pes": (4, 4)}, "pes lists a value twice: [4, 4]"),
    ({"simulate": -1}, "simulate must be a count of inputs >= 0, not -1"),
    ({"build": "false"}, "build must be true or false, not 'false'"),
    ({"sparsity": (False,)}, "sparsity must be in [0, 1), not False"),
    ({"power_w": (("icebreaker", 0),)}, "power of icebreaker must be watts > 0, not 0"),
    ({"compression": (("seed", 3),)}, "compression option 'seed' is an axis of the sweep"),
    ({"compression": (("epochs", 3),)}, "compression option 'epochs' is not a "
                                        "CompressionConfig field"),
    ({"compression": (("final_epochs", -1),)}, "final_epochs must be an integer >= 0"),
    ({"compression": (("task", "regression"),)}, "the sweep measures and ranks "
                                                 "classification accuracy"),
])
def test_spec_refuses_bad_values_by_name(options, message):
    with pytest.raises(ValueError) as error:
        SweepSpec(**options)
    assert message in str(error.value)


def test_spec_from_toml(tmp_path):
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text('pes = [4, 8]\nsparsity = [0.8, 0.9]\nweight_bits = [3, 4]\n'
                         'board = ["icebreaker", "ulx3s-85f"]\nseeds = 2\nmodel = "m.onnx"\n'
                         '[power]\nicebreaker = 0.05\n[compress]\nfinal_epochs = 7\n')
    spec, files = SweepSpec.from_toml(spec_file)
    points = spec.points()
    assert len(points) == 2 * 2 * 2 * 2 * 2
    assert spec.seeds == (0, 1) and dict(spec.power_w) == {"icebreaker": 0.05}
    assert files == {"model": tmp_path / "m.onnx", "data": None}
    ice = next(p for p in points if p.board == "icebreaker")
    ecp5 = next(p for p in points if p.board == "ulx3s-85f")
    # iCE40 block RAMs are 16 bits wide: the compression keeps accumulators within them there.
    assert spec.compression_config(ice).max_acc_bits == 16
    assert spec.compression_config(ecp5).max_acc_bits is None
    assert spec.compression_config(ice).final_epochs == 7
    (tmp_path / "bad.toml").write_text("pes = [4]\nboards = ['icebreaker']\n")
    with pytest.raises(ValueError, match="unknown key.*boards"):
        SweepSpec.from_toml(tmp_path / "bad.toml")


def test_pareto_front_keeps_the_undominated():
    points = [
        {"accuracy": 0.95, "latency_us": 10, "logic_cells": 4000},    # front
        {"accuracy": 0.97, "latency_us": 20, "logic_cells": 4000},    # front: most accurate
        {"accuracy": 0.94, "latency_us": 12, "logic_cells": 4100},    # beaten by the first
        {"accuracy": 0.90, "latency_us": 9, "logic_cells": 5000},     # front: fastest
        {"accuracy": 0.95, "latency_us": 10, "logic_cells": 4000},    # equal to the first
        {"accuracy": 0.93, "latency_us": 30, "logic_cells": 2000},    # front: smallest
    ]
    assert pareto_front(points) == [0, 1, 3, 4, 5]


def test_a_failures_headline_keeps_every_shortfall():
    from sparseforge.sweeps import headline

    reason = ("the engine (16 PEs, 90 entries per PE) does not fit the iCE40UP5K (estimate):\n"
              "  LUT: needs about 9000, the iCE40UP5K has 5280\n"
              "  DSP: needs about 16, the iCE40UP5K has 8\nways out: fewer PEs")
    line = headline(reason)
    assert "LUT: needs about 9000" in line and "DSP: needs about 16" in line
    assert "ways out" not in line


def test_the_report_says_what_was_swept_and_on_which_split_the_accuracy_is():
    from sparseforge.sweeps import _as_data, describe_subject, subject_line

    x, y = np.zeros((6, 13), np.float32), np.arange(6) % 3
    held_out = describe_subject("wine.onnx", _as_data((x, y), (x[:2], y[:2]), (x[:3], y[:3])))
    assert held_out == {"model": "wine.onnx", "data": "given (train 6, val 2, test 3 inputs)",
                        "accuracy_split": "test"}
    assert describe_subject(None, _as_data((x, y), (x[:2], y[:2]), None))["accuracy_split"] \
        == "val"
    # No test split given: none is listed (the training split stood in as "test 6").
    assert describe_subject(None, _as_data((x, y), None, None))["data"] == \
        "given (train 6 inputs)"
    line = subject_line(describe_subject(None, _as_data((x, y), None, None)))
    assert "accuracy on the train split" in line and "optimistic" in line
    assert "embedded" in describe_subject(None, None)["data"]
    # A compressed model (docs/sweep.md allows one) was an AttributeError here, so every
    # sweep of one failed.
    from tests.test_compress_file import make_model

    assert describe_subject(make_model(), None)["model"] == "a compressed model (12-9-4)"


def test_a_sweep_without_held_out_data_warns_that_its_accuracy_is_the_training_datas(tmp_path):
    from sparseforge.compiler.errors import InputError, InputWarning

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    x, y = np.zeros((6, 64), np.float32), np.arange(6) % 3
    with pytest.warns(InputWarning, match="measured on the training data"), \
            pytest.raises(InputError, match="not a folder"):
        sweep(train=(x, y), out=not_a_folder)


def test_store_skips_a_torn_line_and_the_last_record_wins(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append({"key": "a", "status": "failed"})
    store.append({"key": "b", "status": "ok", "figures": {"x": np.float64(1.5)}})
    store.append({"key": "a", "status": "ok"})
    with open(store.path, "a") as handle:
        handle.write('{"format": 1, "key": "c", "sta')          # a crash mid-write
    records = store.load()
    assert set(records) == {"a", "b"}
    assert records["a"]["status"] == "ok" and records["b"]["figures"] == {"x": 1.5}


def test_model_digest_follows_the_parameters(small_model):
    import copy

    import torch

    twin = copy.deepcopy(small_model)
    assert model_digest(twin) == model_digest(small_model)
    with torch.no_grad():
        twin.fc1.weight[0, 0] += 1e-3
    assert model_digest(twin) != model_digest(small_model)
    assert model_digest(None) != model_digest(small_model)


# ---- on Ray -------------------------------------------------------------------------------

def test_sweep_records_failures_shares_compressions_and_resumes(local_ray, small_model,
                                                                tmp_path):
    options = dict(pes=[4, 16], sparsity=[0.8, 0.9], board=["icebreaker"], config=FAST,
                   cycle_inputs=40, out=tmp_path, power_w={"icebreaker": 0.05})
    result = sweep(small_model, **options)
    assert result.computed == 4 and result.cached == 0
    points = {(p["pes"], p["sparsity"]): p for p in result.points}
    # 16 PEs do not fit the iCE40UP5K: a failure with its reason, and the sweep went on.
    for sparsity in (0.8, 0.9):
        failed = points[(16, sparsity)]
        assert failed["status"] == "failed" and failed["stage"] == "compile"
        assert "does not fit the iCE40UP5K" in failed["reason"]
        ok = points[(4, sparsity)]
        assert ok["status"] == "ok" and 0.5 < ok["accuracy"] <= 1
        assert ok["latency_us"] == pytest.approx(ok["cycles_per_inference"] / 33.0, abs=1e-3)
        assert ok["logic_cells"] == ok["estimate"]["lut"]
        assert ok["inferences_per_joule"] == pytest.approx(1e6 / ok["latency_us"] / 0.05,
                                                           rel=1e-3)
        assert ok["sparsity_measured"] == pytest.approx(sparsity, abs=0.01)
    # Two compressions for four points: each shared by the points of its settings.
    assert len(list((tmp_path / "models").glob("*.sfm"))) == 2
    assert points[(4, 0.9)]["cycles_per_inference"] < points[(4, 0.8)]["cycles_per_inference"]
    assert [p["key"] for p in result.pareto()["icebreaker"]]
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "Pareto front" in report and "compile: the engine (16 PEs" in report
    assert "Model: Sequential (" in report and "accuracy on the test split." in report
    assert "| 33.0 (target) |" in report                # not built: the board's target clock

    # The same sweep again: every point from the store, no Ray session needed.
    started = time.perf_counter()
    again = sweep(small_model, **options)
    assert again.computed == 0 and again.cached == 4
    assert time.perf_counter() - started < 10
    assert [p["key"] for p in again.points] == [p["key"] for p in result.points]

    # An interrupted sweep: the store lost its last point; only that one runs again, from
    # the compressed model kept in the output folder.
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    lost = json.loads(lines[-1])
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    resumed = sweep(small_model, **options)
    assert resumed.computed == 1 and resumed.cached == 3
    redone = next(p for p in resumed.points if p["key"] == lost["key"])
    if redone["status"] == "ok":
        assert "compress" not in redone["seconds"]        # the kept model, not compressed again
    # A changed setting is a different point.
    other = sweep(small_model, **(options | {"pes": [2]}))
    assert other.computed == 2


def test_a_killed_worker_is_retried_and_every_point_completes(local_ray, small_model,
                                                              tmp_path):
    killed = []

    def kill_an_evaluation():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for pid in _processes_titled("ray::_evaluate_task"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.01)

    killer = threading.Thread(target=kill_an_evaluation, daemon=True)
    killer.start()
    result = sweep(small_model, pes=[2, 4], sparsity=[0.85], board=["ulx3s-85f"],
                   config=FAST, out=tmp_path)
    killer.join(timeout=5)
    assert killed, "no evaluation task was seen running"
    assert [p["status"] for p in result.points] == ["ok", "ok"]
    assert killed[0] not in {p["worker"]["pid"] for p in result.points}


def _processes_titled(prefix: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(prefix):
            found.append(int(entry.name))
    return found


def test_cli_sweep_json_and_errors(local_ray, small_model, tmp_path, capsys):
    import torch

    torch.save(small_model.state_dict(), tmp_path / "mlp.pt")
    (tmp_path / "spec.toml").write_text(
        'pes = [4]\nsparsity = [0.85]\nboard = ["icebreaker"]\nmodel = "mlp.pt"\n'
        'cycle_inputs = 20\n[compress]\nprune_steps = 2\nprune_epochs = 2\n'
        'final_epochs = 4\nshare_epochs = 4\n')
    out = tmp_path / "out"
    status = main(["sweep", str(tmp_path / "spec.toml"), "--pes", "4,8", "--out", str(out),
                   "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert status == 0
    assert payload["total"] == 2 and payload["computed"] == 2 and payload["failed"] == 0
    assert {p["pes"] for p in payload["points"]} == {4, 8}
    assert payload["pareto"]["icebreaker"]
    assert Path(payload["store"]).exists() and Path(payload["plot"]).exists()

    status = main(["sweep", "--pes", "0", "--json"])
    captured = capsys.readouterr()
    assert status == 2
    assert json.loads(captured.out) == {"error": "pes must be between 1 and 64, not 0"}
    assert "error:" in captured.err


def test_a_local_session_is_its_own_and_its_workers_use_the_portable_kernels(monkeypatch):
    """With a cluster running on the machine (RAY_ADDRESS, or one `ray start` left behind)
    ray.init attached to it and refused num_cpus ("When connecting to an existing cluster,
    num_cpus and num_gpus must not be provided"): sweep and verify exited 2.  And workers
    used the caller's kernels: an API sweep stored other figures than the CLI's."""
    from sparseforge.cluster import ray_session

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")            # no cluster there
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    with ray_session(workers=1) as ray:
        @ray.remote
        def kernels():
            import os
            return os.environ.get("ATEN_CPU_CAPABILITY")

        assert ray.get(kernels.remote()) == "default"


def test_a_point_whose_simulation_is_not_bit_exact_is_a_failure(tmp_path):
    """It was recorded "ok", ranked and kept on the Pareto front; only sweep.json said
    bit_exact false."""
    from sparseforge.sweeps import Point, _record

    class Resolved:                      # ray.get of values already resolved
        @staticmethod
        def get(value):
            return value

    figures = {"accuracy": 0.9, "cycles_per_inference": 300.0}
    refs = {"figures": figures, "simulate": {"bit_exact": False, "mismatches": 1, "inputs": 3}}
    record = _record(Resolved, "k", Point("icebreaker", 4, 0.9, 4, 0), refs, {}, tmp_path)
    assert record["status"] == "failed"
    assert record["failure"]["stage"] == "simulate"
    assert record["failure"]["reason"].startswith("not bit-exact: 1 outputs of 3 inputs "
                                                  "differ from the golden model")
    refs["simulate"] = {"bit_exact": True, "mismatches": 0, "inputs": 3}
    assert _record(Resolved, "k", Point("icebreaker", 4, 0.9, 4, 0), refs, {},
                   tmp_path)["status"] == "ok"


def test_sf_sweep_stays_the_function_after_its_module_is_imported():
    # `from sparseforge.sweep import SweepSpec` made sf.sweep that module ("'module' object
    # is not callable"): the module is sparseforge.sweeps.
    import sparseforge as sf
    from sparseforge.sweeps import SweepSpec  # noqa: F401

    assert callable(sf.sweep) and sf.sweep.__name__ == "sweep"


def test_a_cluster_nobody_answers_on_is_refused_at_once(tmp_path, capsys):
    """--address 127.0.0.1:1 printed Ray's "Failed to connect to GCS" for over six minutes and
    ignored SIGTERM; docs/cli.md promises exit 2."""
    started = time.monotonic()
    assert main(["sweep", "--pes", "4", "--address", "127.0.0.1:1", "--out",
                 str(tmp_path / "sweep")]) == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in capsys.readouterr().err
    assert time.monotonic() - started < 60 and not (tmp_path / "sweep").exists()
