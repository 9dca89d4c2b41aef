"""Regression models: targets are values, one per output.  Compression trains them on the mean
squared error and scores them by R²; one output stays one (a classifier's single logit becomes
two classes); a final Sigmoid is refused rather than dropped; the program's outputs, read as
their fixed-point values, score as the compression stage said."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import sparseforge as sf
from sparseforge.cli import main
from sparseforge.compiler.compress.api import CompressionConfig
from sparseforge.compiler.compress.training import score
from sparseforge.compiler.errors import InputError

SCHEDULE = dict(sparsity=0.6, prune_steps=2, prune_epochs=4, final_epochs=10, share_epochs=8)


def problem(outputs: int, samples: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 6)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2],
                  np.maximum(x[:, 3], 0) - x[:, 4]][:outputs], 1).astype(np.float32)
    return x, y


def trained(outputs: int, x, y, final=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, outputs),
                          *([final] if final else []))
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(40):
        for start in range(0, len(x), 64):
            optimiser.zero_grad()
            loss = nn.functional.mse_loss(model(inputs[start:start + 64]),
                                          targets[start:start + 64])
            loss.backward()
            optimiser.step()
    return model.eval()


def test_r2_is_one_when_perfect_and_zero_for_the_means():
    y = np.array([[1.0, 2.0], [3.0, 0.0]], dtype=np.float32)
    assert score(y, y) == 1.0
    assert score(np.broadcast_to(y.mean(axis=0), y.shape), y) == 0.0


@pytest.mark.parametrize("outputs", [1, 2])
def test_a_regression_model_compresses_and_its_program_scores_as_reported(outputs, tmp_path):
    x, y = problem(outputs)
    model = trained(outputs, x[:500], y[:500])
    compressed = sf.compress(model, (x[:500], y[:500]), test=(x[500:], y[500:]),
                             task="regression", act_bits=16, **SCHEDULE)
    report = compressed.report
    assert report.metric == "r2" and compressed.provenance["config"]["task"] == "regression"
    assert report.accuracy_float > 0.9 and report.accuracy_quantized > 0.85
    assert "R² on test data: float" in report.to_text()
    assert compressed.network.layers[-1].out_features == outputs   # one output stays one
    program = sf.compile(compressed, pes=4)
    values = program.dequantize(sf.reference(program, x[500:]))
    assert values.shape == (100, outputs)
    assert score(values, y[500:]) == pytest.approx(report.accuracy_quantized)
    assert program.task == "regression"      # its outputs are values (sparseforge run says them)
    program.save(tmp_path / "program")
    assert sf.load_program(tmp_path / "program").task == "regression"
    if outputs == 2:
        from sparseforge.run_report import write_report

        folder = write_report(tmp_path / "report", compressed=compressed, program=program,
                              inputs=x[500:510]).parent
        page = (folder / "report.md").read_text()
        assert f"Compressed R² | {report.accuracy_quantized:.4f}" in page


def test_what_a_regression_cannot_be_is_refused_by_name():
    x, y = problem(1, samples=200)
    with pytest.raises(InputError, match=r"Softmax.*a regression model's outputs are its values"):
        sf.compress(trained(1, x, y, final=nn.Softmax(dim=1)), (x, y), task="regression")
    with pytest.raises(InputError, match="the train data has 2 targets a sample but the model "
                                         "has 1 output"):
        sf.compress(trained(1, x, y), (x, np.c_[y, y]), task="regression")
    with pytest.raises(ValueError, match="distill_alpha must be None for a regression"):
        CompressionConfig(task="regression", distill_alpha=0.5)
    with pytest.raises(ValueError, match="task must be 'classification' or 'regression'"):
        CompressionConfig(task="regresion")
    with pytest.raises(InputError, match=r"y holds nan at sample 3"):
        sf.compress(trained(1, x, y), (x, np.where(np.arange(200)[:, None] == 3, np.nan, y)),
                    task="regression")


def test_a_regressions_final_sigmoid_runs_as_its_last_layers_table():
    x, y = problem(1)
    y = 1 / (1 + np.exp(-2 * y))                    # targets in (0, 1)
    model = trained(1, x[:500], y[:500], final=nn.Sigmoid())
    compressed = sf.compress(model, (x[:500], y[:500]), test=(x[500:], y[500:]),
                             task="regression", **SCHEDULE)
    last = compressed.network.layers[-1]
    assert str(last.function) == "sigmoid" and last.out_features == 1
    assert compressed.report.accuracy_quantized > 0.8
    program = sf.compile(compressed, pes=2)
    values = program.dequantize(sf.reference(program, x[500:]))
    assert 0 <= values.min() and values.max() <= 1
    assert score(values, y[500:]) == pytest.approx(compressed.report.accuracy_quantized)


def test_the_command_line_compresses_a_regression_from_a_table(tmp_path, capsys):
    x, y = problem(1, samples=300)
    model = trained(1, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.from_numpy(x[:1]), tmp_path / "m.onnx", dynamo=False)
    lines = ["a,b,c,d,e,f,target"] + [",".join(f"{v:.4f}" for v in (*row, t))
                                      for row, t in zip(x, y[:, 0])]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    common = ["--data", str(tmp_path / "t.csv"), "--task", "regression", "--prune-steps", "1",
              "--prune-epochs", "2", "--final-epochs", "4", "--share-epochs", "4",
              "--sparsity", "0.5", "-o", str(tmp_path / "m.sfm")]
    assert main(["compress", str(tmp_path / "m.onnx"), *common]) == 0
    assert "R² on training data: float" in capsys.readouterr().out
    assert main(["compress", *common]) == 2
    assert "--task regression needs your MODEL" in capsys.readouterr().err
    # A model of two outputs takes the table's last two columns as its targets.
    x, y = problem(2, samples=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(trained(2, x, y), torch.from_numpy(x[:1]), tmp_path / "m2.onnx",
                          dynamo=False)
    lines = ["a,b,c,d,e,f,t1,t2"] + [",".join(f"{v:.4f}" for v in (*row, *t))
                                     for row, t in zip(x, y)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    assert main(["compress", str(tmp_path / "m2.onnx"), *common]) == 0
    assert "labels from 't1', 't2' (the last 2)" in capsys.readouterr().err


def test_a_simulation_of_a_regression_program_scores_its_targets_by_r2():
    from sparseforge.sim.simulate import Simulation

    values = np.array([[0.5], [1.5], [2.0]])
    zeros = np.zeros((3, 1))
    simulation = Simulation(outputs=np.array([[1], [3], [4]]), golden=np.array([[1], [3], [4]]),
                            cycles=zeros + 10, predicted=zeros + 10, limit=zeros, bound=zeros,
                            overhead=np.zeros(1), work=zeros, pes=1, simulator="verilator",
                            seconds=1.0, build_seconds=1.0,
                            labels=np.array([[0.5], [1.5], [2.5]], np.float32), values=values)
    assert simulation.metric == "r2" and simulation.to_json()["metric"] == "r2"
    # squared error 0.25 over the targets' 2 about their mean
    assert simulation.accuracy == pytest.approx(1 - 0.25 / 2)


def test_sim_takes_a_regression_programs_targets(tmp_path, capsys, monkeypatch):
    seen = {}

    def simulate(program, x, *, labels=None, **_):
        seen.update(labels=labels)
        raise RuntimeError("not simulated in this test")

    def sim(program, inputs, *options):
        assert main(["sim", str(program), "--inputs", str(inputs), "--build-dir",
                     str(tmp_path / "b"), *options]) == 2
        return " ".join(capsys.readouterr().err.split())

    for outputs in (1, 2):
        x, y = problem(outputs, samples=200)
        compressed = sf.compress(trained(outputs, x, y), (x, y), task="regression",
                                 sparsity=0.5, prune_steps=1, prune_epochs=1, final_epochs=1,
                                 share_epochs=1)
        sf.compile(compressed, pes=2).save(tmp_path / f"program{outputs}")
    monkeypatch.setattr(sf, "simulate", simulate)
    # One output: a table's last column holds the targets.
    lines = ["a,b,c,d,e,f,target"] + [",".join(f"{v:.4f}" for v in (*row, t))
                                      for row, t in zip(x[:5], y[:5, 0])]
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    assert "not simulated in this test" in sim(tmp_path / "program1", tmp_path / "x.csv")
    assert seen["labels"].dtype == np.float32 and seen["labels"].shape == (5, 1)
    np.testing.assert_allclose(seen["labels"][:, 0], y[:5, 0], atol=1e-4)
    # Two outputs: the targets in an .npy beside the inputs; a table of one column, refused.
    np.save(tmp_path / "x.npy", x[:5])
    np.save(tmp_path / "y.npy", y[:5])
    assert "not simulated" in sim(tmp_path / "program2", tmp_path / "x.npy", "--labels",
                                  str(tmp_path / "y.npy"))
    assert seen["labels"].shape == (5, 2)
    np.save(tmp_path / "y1.npy", y[:5, 0])
    assert "targets must be 5 x 2 (one value per output of each input), not of shape (5,)" in \
        sim(tmp_path / "program2", tmp_path / "x.npy", "--labels", str(tmp_path / "y1.npy"))
    assert ("x.csv: 7 columns; the model's inputs and their targets are 6 + 2 (or name the "
            "target columns with --label-column t1,t2)") in \
        sim(tmp_path / "program2", tmp_path / "x.csv")
    # Two target columns, the last two or named.
    lines = ["t1,a,b,c,d,e,f,t2"] + [",".join(f"{v:.4f}" for v in (t[0], *row, t[1]))
                                     for row, t in zip(x[:5], y[:5])]
    (tmp_path / "xy.csv").write_text("\n".join(lines) + "\n")
    assert "labels from 't1', 't2'" in sim(tmp_path / "program2", tmp_path / "xy.csv",
                                           "--label-column", "t1,t2")
    np.testing.assert_allclose(seen["labels"], y[:5], atol=1e-4)


def test_a_torch_dataset_of_target_rows_keeps_them_rows():
    from torch.utils.data import DataLoader, TensorDataset

    from sparseforge.compiler.compress.training import as_pair

    x, y = problem(2, samples=10)
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    for data in (dataset, DataLoader(dataset, batch_size=4)):
        features, targets = as_pair(data, "train")
        assert features.shape == (10, 6) and targets.shape == (10, 2)
        np.testing.assert_array_equal(targets, y)
    labels = TensorDataset(torch.from_numpy(x), torch.arange(10) % 3)
    assert as_pair(DataLoader(labels, batch_size=4), "train")[1].tolist() == \
        [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
