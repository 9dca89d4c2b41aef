"""User mistakes on the command line, each refused early with a message that names the file or
value and the way out (a robustness sweep's findings)."""

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
