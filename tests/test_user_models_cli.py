"""A user's own PyTorch model files through `sparseforge compress`: what is read, and what is
refused with a message that says what the file is and the way out."""

import numpy as np
import pytest

from sparseforge.cli import main


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    """rich wraps at the console width; wide enough that a message stays on one line."""
    monkeypatch.setenv("COLUMNS", "500")


def _data(path, n=40, features=6, classes=3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)).astype(np.float32)
    x[np.arange(n), y] += 2.0
    np.savez(path, x_train=x, y_train=y)
    return path


def test_a_state_dict_of_the_default_mlp_on_other_data_is_read_at_its_size(tmp_path, capsys):
    import torch

    from sparseforge.compiler.compress.digits import digits_mlp
    from sparseforge.compiler.compress.model import load_compressed

    # fc1 / ReLU / fc2 as the default MLP, but 6 -> 16 -> 3 (was refused as "does not fit the
    # digits MLP (64 -> hidden -> 10)").
    torch.save(digits_mlp(16, inputs=6, classes=3).state_dict(), tmp_path / "mine.pt")
    data = _data(tmp_path / "d.npz")
    assert main(["compress", str(tmp_path / "mine.pt"), "--data", str(data), "--sparsity",
                 "0.5", "-o", str(tmp_path / "m.sfm")]) == 0
    layers = load_compressed(tmp_path / "m.sfm").network.layers
    assert [(layer.in_features, layer.out_features) for layer in layers] == [(6, 16), (16, 3)]
    capsys.readouterr()
    # Without --data the data would be the digits' 64 features: said before any training.
    assert main(["compress", str(tmp_path / "mine.pt"), "-o", str(tmp_path / "n.sfm")]) == 2
    err = capsys.readouterr().err
    assert "mine.pt takes 6 inputs, and without --data the data is the default" in err
    assert not (tmp_path / "n.sfm").exists()


def test_a_torchscript_archive_is_named_as_one(tmp_path, capsys):
    import warnings

    import torch
    import torch.nn as nn

    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with warnings.catch_warnings():            # torch deprecates TorchScript: its warning
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
    data = _data(tmp_path / "d.npz")
    # (torch.load warned of dispatching to torch.jit.load, an error under this suite's
    # filterwarnings, and the message said "needs pickle (a whole saved module?) or is
    # damaged".)
    assert main(["compress", str(tmp_path / "scripted.pt"), "--data", str(data), "-o",
                 str(tmp_path / "m.sfm")]) == 2
    err = capsys.readouterr().err
    assert "scripted.pt: is a TorchScript archive (torch.jit.save), which sparseforge does " \
           "not read: export the original module to ONNX" in err
    assert not (tmp_path / "m.sfm").exists()
    # A compressed model given again was told it needs pickle.
    (tmp_path / "done.sfm").write_bytes(b"PK\x03\x04")
    assert main(["compress", str(tmp_path / "done.sfm"), "--data", str(data), "-o",
                 str(tmp_path / "m.sfm")]) == 2
    assert "done.sfm is a compressed model already (.sfm): compile it" in \
        " ".join(capsys.readouterr().err.split())


def test_a_slow_compression_says_how_far_it_got_without_a_terminal(tmp_path, capsys,
                                                                     monkeypatch):
    from sparseforge.compiler.compress import training

    # A large model on a large data set trains for many minutes; piped to a log it printed
    # nothing at all until the end.  Every phase counts as slow here.
    monkeypatch.setattr(training, "SLOW_PHASE", 0.0)
    monkeypatch.setattr(training, "HEARTBEAT", 0.0)
    data = _data(tmp_path / "d.npz")
    assert main(["compress", "--data", str(data), "--sparsity", "0.5", "-o",
                 str(tmp_path / "m.sfm")]) == 0
    lines = capsys.readouterr().err.splitlines()
    for line in ("pruning, step 1 of 8: epoch 1 of 8, ",
                 "pruning, step 8 of 8: 8 epochs in ",
                 "fine-tuning the pruned model: 60 epochs in ",
                 "training the shared weights: 40 epochs in "):
        assert any(text.startswith(line) and text.endswith(" s") for text in lines), line
    assert "\x1b" not in "".join(lines)            # no bar's control codes in a log
    # A fast phase (the default thresholds) prints nothing.
    monkeypatch.undo()
    monkeypatch.setenv("COLUMNS", "500")
    assert main(["compress", "--data", str(data), "--sparsity", "0.5", "-o",
                 str(tmp_path / "n.sfm")]) == 0
    assert "epochs in" not in capsys.readouterr().err


def test_sim_says_it_is_building_when_the_output_is_a_log(tmp_path, capsys, monkeypatch):
    import torch.nn as nn

    import sparseforge as sf

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 3
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    compressed = sf.compress(model, (x, y), sparsity=0.5, prune_steps=1, prune_epochs=1,
                             final_epochs=1, share_epochs=1)
    sf.compile(compressed, pes=2).save(tmp_path / "program")
    np.save(tmp_path / "x.npy", x[:3])
    seen = []

    def simulate(*args, **kwargs):           # the build and run take a minute: not here
        seen.append(capsys.readouterr().err)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(sf, "simulate", simulate)
    # The status line of a terminal showed nothing in a log during the simulator's build.
    assert main(["sim", str(tmp_path / "program"), "--inputs", str(tmp_path / "x.npy")]) == 2
    assert seen and seen[0].startswith("simulating 3 inputs on verilator (the first run of "
                                       "an engine builds it first, a minute or more)...")
    # With a build there, the minute is not promised.
    (tmp_path / "program" / "sim" / "verilator_0123456789abcdef").mkdir(parents=True)
    assert main(["sim", str(tmp_path / "program"), "--inputs", str(tmp_path / "x.npy")]) == 2
    assert seen[1].endswith("simulating 3 inputs on verilator...\n")


def test_a_training_checkpoint_is_read_for_its_model_state_dict(tmp_path, capsys):
    import torch

    from sparseforge.compiler.compress.digits import digits_mlp

    state = digits_mlp(8, inputs=6, classes=3).state_dict()
    # The usual checkpoint: the model's state_dict beside the optimizer's and the epoch (was
    # "expected a state_dict (names -> tensors), found dict").
    torch.save({"model_state_dict": state, "epoch": 7,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.01}]}},
               tmp_path / "checkpoint.pt")
    data = _data(tmp_path / "d.npz")
    assert main(["compress", str(tmp_path / "checkpoint.pt"), "--data", str(data),
                 "--sparsity", "0.5", "-o", str(tmp_path / "m.sfm")]) == 0
    assert (tmp_path / "m.sfm").is_file()
    capsys.readouterr()
    torch.save({"model": state, "ema": state}, tmp_path / "two.pt")
    assert main(["compress", str(tmp_path / "two.pt"), "--data", str(data), "-o",
                 str(tmp_path / "n.sfm")]) == 2
    assert ("two.pt: is a checkpoint of several state_dicts (model, ema); save the model's "
            "alone: torch.save(checkpoint['model'], 'model.pt')") in capsys.readouterr().err
    torch.save({"epoch": 7}, tmp_path / "none.pt")
    assert main(["compress", str(tmp_path / "none.pt"), "--data", str(data), "-o",
                 str(tmp_path / "n.sfm")]) == 2
    assert ("none.pt: expected a state_dict (names -> tensors), found a dict of epoch"
            in capsys.readouterr().err)
    assert not (tmp_path / "n.sfm").exists()


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_a_state_dict_saved_from_a_wrapper_is_read_without_its_prefix(tmp_path, prefix):
    import torch

    from sparseforge.compiler.compress.digits import digits_mlp

    # nn.DataParallel / DistributedDataParallel save "module.fc1.weight", torch.compile
    # "_orig_mod.fc1.weight" (was refused: "the state_dict has no 'fc1.weight'").
    state = digits_mlp(8, inputs=6, classes=3).state_dict()
    torch.save({prefix + key: value for key, value in state.items()}, tmp_path / "m.pt")
    assert main(["compress", str(tmp_path / "m.pt"), "--data", str(_data(tmp_path / "d.npz")),
                 "--sparsity", "0.5", "-o", str(tmp_path / "m.sfm")]) == 0
    assert (tmp_path / "m.sfm").is_file()


def test_sparsity_beside_a_sensitivity_budget_is_refused_not_ignored(tmp_path, capsys):
    data = _data(tmp_path / "d.npz")
    # The scan chose every layer's sparsity and --sparsity 0.5 was dropped without a word
    # (sf.compress refuses both together).
    assert main(["compress", "--data", str(data), "--sparsity", "0.5",
                 "--sensitivity-budget", "0.01", "-o", str(tmp_path / "m.sfm")]) == 2
    assert ("error: give --sparsity or --sensitivity-budget, not both: the sensitivity scan "
            "chooses each layer's sparsity, and --sparsity 0.5 would be ignored"
            in capsys.readouterr().err)
    assert not (tmp_path / "m.sfm").exists()


def test_text_data_not_named_as_a_table_is_told_how_to_make_the_npz(tmp_path, capsys):
    # A .csv is read as a table (test_cli_table.py); text under another name is not guessed at.
    np.savetxt(tmp_path / "train.txt", np.c_[np.zeros((4, 3)), np.arange(4) % 2],
               delimiter=",")
    assert main(["compress", "--data", str(tmp_path / "train.txt"), "-o",
                 str(tmp_path / "m.sfm")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    # It said only "this file is not an archive".
    assert (f"train.txt: the data must be an .npz archive (np.savez) of named arrays; this "
            f"file is text (a CSV?): read it, e.g. table = np.loadtxt("
            f"'{tmp_path / 'train.txt'}', delimiter=','), and save the arrays with "
            f"np.savez('data.npz', x_train=table[:, :-1], y_train=table[:, -1].astype(int))"
            in err)
    (tmp_path / "noise.bin").write_bytes(bytes(range(256)) * 4)
    assert main(["compress", "--data", str(tmp_path / "noise.bin"), "-o",
                 str(tmp_path / "m.sfm")]) == 2
    assert "noise.bin: the data must be an .npz archive (np.savez) of named arrays; this " \
           "file is not an archive" in capsys.readouterr().err


def test_the_training_schedule_can_be_shortened_on_the_command_line(tmp_path, capsys,
                                                                    monkeypatch):
    import json

    from sparseforge.compiler.compress import api, training

    epochs = []
    original = training.train

    def counting(model, data, config, **kwargs):
        epochs.append(config.epochs)
        return original(model, data, config, **kwargs)

    # The default schedule's 164 epochs took 18 minutes for a large MLP, and only sf.compress
    # could shorten them.
    monkeypatch.setattr(training, "train", counting)       # pruning's retraining
    monkeypatch.setattr(api, "fine_tune", counting)        # the shared weights'
    assert main(["compress", str(_mlp(tmp_path)), "--data", str(_data(tmp_path / "d.npz")),
                 "--sparsity", "0.5", "--prune-steps", "2", "--prune-epochs", "3",
                 "--final-epochs", "4", "--share-epochs", "5", "-o", str(tmp_path / "m.sfm"),
                 "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["provenance"]["config"]
    assert (config["prune_steps"], config["prune_epochs"], config["final_epochs"],
            config["share_epochs"]) == (2, 3, 4, 5)
    assert epochs == [3, 3, 4, 5]


def _mlp(tmp_path):
    import torch

    from sparseforge.compiler.compress.digits import digits_mlp

    torch.save(digits_mlp(8, inputs=6, classes=3).state_dict(), tmp_path / "mlp.pt")
    return tmp_path / "mlp.pt"


def test_an_npz_of_x_and_y_is_the_training_data(tmp_path, capsys):
    import torch

    from sparseforge.compiler.compress.digits import digits_mlp
    from sparseforge.compiler.compress.model import load_compressed

    torch.save(digits_mlp(16, inputs=6, classes=3).state_dict(), tmp_path / "mine.pt")
    with np.load(_data(tmp_path / "d.npz")) as arrays:
        np.savez(tmp_path / "xy.npz", x=arrays["x_train"], y=arrays["y_train"])
    # It was refused: "lacks x_train, y_train (has x, y)".
    assert main(["compress", str(tmp_path / "mine.pt"), "--data", str(tmp_path / "xy.npz"),
                 "--sparsity", "0.5", "-o", str(tmp_path / "m.sfm")]) == 0
    captured = capsys.readouterr()
    assert "xy.npz: x, y read as the training data" in captured.err
    assert "accuracy on training data" in captured.out
    assert load_compressed(tmp_path / "m.sfm").network.layers[0].in_features == 6
    # In scikit-learn's capitals too (X, y; X_train, Y_train).
    with np.load(_data(tmp_path / "d.npz")) as arrays:
        np.savez(tmp_path / "caps.npz", X=arrays["x_train"], y=arrays["y_train"])
        np.savez(tmp_path / "caps_split.npz", X_train=arrays["x_train"],
                 Y_train=arrays["y_train"])
    for name in ("caps.npz", "caps_split.npz"):
        assert main(["compress", str(tmp_path / "mine.pt"), "--data", str(tmp_path / name),
                     "--sparsity", "0.5", "-o", str(tmp_path / f"{name}.sfm")]) == 0
    capsys.readouterr()
    # Beside a test set, x and y are not guessed at.
    with np.load(_data(tmp_path / "d.npz")) as arrays:
        np.savez(tmp_path / "odd.npz", x=arrays["x_train"], y=arrays["y_train"],
                 x_test=arrays["x_train"], y_test=arrays["y_train"])
    assert main(["compress", str(tmp_path / "mine.pt"), "--data", str(tmp_path / "odd.npz"),
                 "-o", str(tmp_path / "n.sfm")]) == 2
    assert "lacks x_train, y_train" in capsys.readouterr().err


def test_the_default_sparsity_says_when_it_lowered_itself(tmp_path, capsys):
    import json
    import warnings

    import torch

    from tests.test_user_models_api import _iris_model

    model, (x, y) = _iris_model()
    with warnings.catch_warnings():             # the legacy exporter's deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 4), str(tmp_path / "iris.onnx"), dynamo=False)
    # No validation data: the choice is judged on the test data, and said so (on the
    # training data, where the float model is at 100%, every pruned one looked worse).
    np.savez(tmp_path / "iris.npz", x_train=x[::2], y_train=y[::2], x_test=x[1::2],
             y_test=y[1::2])
    schedule = ["--prune-steps", "2", "--prune-epochs", "4", "--final-epochs", "10",
                "--share-epochs", "5"]
    assert main(["compress", str(tmp_path / "iris.onnx"), "--data", str(tmp_path / "iris.npz"),
                 "-o", str(tmp_path / "m.sfm"), *schedule]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "sparsity: the default lowered itself (0.9 lost " in out
    assert (" on the test data): compressed at " in out
            and "validation data, x_val and y_val, keep the test data out of the choice" in out)
    assert main(["compress", str(tmp_path / "iris.onnx"), "--data", str(tmp_path / "iris.npz"),
                 "-o", str(tmp_path / "n.sfm"), "--sparsity", "0.9", "--json",
                 *schedule]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["sparsity"] == pytest.approx(0.9, abs=0.02)
    assert "sparsity_tried" not in figures["provenance"]
