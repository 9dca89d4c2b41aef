"""A CSV table as ``compress --data``: feature columns and a label column, with or without a
header, class names numbered and told; what cannot be read is refused naming line and column."""

import json

import numpy as np
import pytest

from sparseforge.cli import main
from sparseforge.commands.table import load_table
from sparseforge.compiler.errors import InputError
from tests.test_cli_robustness import program_dir  # noqa: F401 (a fixture)

SPECIES = ("setosa", "versicolor", "virginica")


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def iris_like(path, samples=60):
    rng = np.random.default_rng(0)
    lines = ["sepal_length,sepal_width,species,petal_length"]
    for i in range(samples):
        label = i % 3
        a, b, c = rng.normal(size=3) * 0.3 + label
        lines.append(f"{a:.2f},{b:.2f},{SPECIES[label]},{c:.2f}")
    return write(path, lines)


def test_a_header_names_the_features_and_a_named_label_column_wherever_it_is(tmp_path):
    path = write(tmp_path / "t.csv", ["a,target,b", "1.5,2,3", "4,0,-6e-1", "", "7,1,8"])
    table = load_table(path)
    np.testing.assert_allclose(table.x, [[1.5, 3], [4, -0.6], [7, 8]])
    assert table.y.tolist() == [2, 0, 1]
    assert table.label_column == "'target'" and table.class_names is None
    assert "3 samples, 2 feature columns, labels from 'target'" in table.describe(path)


def test_without_a_header_the_last_column_is_the_label_unless_chosen(tmp_path):
    path = write(tmp_path / "t.csv", ["1,2,0", "3,4,1"])
    assert load_table(path).y.tolist() == [0, 1]
    assert load_table(path).label_column == "column 2 (the last)"
    assert load_table(path, "0").y.tolist() == [1, 3]
    semicolons = write(tmp_path / "s.csv", ["f1;f2;label", "1;2;1", "3;4;0"])
    assert load_table(semicolons).x.tolist() == [[1, 2], [3, 4]]
    tabs = write(tmp_path / "t.tsv", ["f1\tclass\tf2", "1\tb\t2", "3\ta\t4"])
    table = load_table(tabs)
    assert table.y.tolist() == [1, 0] and table.class_names == ("a", "b")
    assert "classes 0 = a, 1 = b" in table.describe(tabs)


@pytest.mark.parametrize("lines,label_column,message", [
    (["a,b,label", "1,2,0", "3,NA,1"], None, r"t.csv line 3, 'b': 'NA' is not a number; "
                                             r"features must be numbers \(fill or drop"),
    (["a,b,c", "1,2,0", "3,NA,1"], None, r"t.csv line 3, 'b': 'NA' is not a number"),
    (["a,b,label", "1,2,0", "3,1"], None, "t.csv line 3: 2 columns where the header has 3"),
    (["a,b,label", "1,2,0.5", "3,1,1"], None, r"labels \('label'\) hold fractions such as "
                                              r"0.5.*for a regression's targets give --task "
                                              r"regression"),
    (["a,b,label", "1,2,x", "3,1,"], None, r"sample 2 has no label \('label'\)"),
    (["a,b,label", "1,2,0"], "kind", r"no label column 'kind': give a header name or an index "
                                     r"0 .. 2 \(the header names 'a', 'b', 'label'\)"),
    (["a,b,label"], None, "the table has a header and no samples"),
    # One stray name among numbers would have renumbered every class ('10' sorts before '2').
    (["a,b,label", "1,2,0", "3,1,unknown", "2,2,10", "1,1,2"], None,
     r"t.csv line 3, 'label': 'unknown' is not a number, and 3 of the 4 labels are numbers: "
     r"labels are class numbers or class names, not both"),
    (["a,b,label", "1,2,cat", "3,1,dog", "2,2,3"], None,
     r"t.csv line 4, 'label': '3' is a number, and 2 of the 3 labels are names"),
    (["1", "2"], None, "one column; a table needs feature columns and a label column"),
])
def test_what_cannot_be_read_is_named(tmp_path, lines, label_column, message):
    with pytest.raises(InputError, match=message):
        load_table(write(tmp_path / "t.csv", lines), label_column)


def test_compress_trains_the_default_on_a_table_with_class_names(tmp_path, capsys):
    path = iris_like(tmp_path / "iris.csv")
    assert main(["compress", "--data", str(path), "-o", str(tmp_path / "m.sfm"),
                 "--sparsity", "0.5", "--prune-steps", "1", "--prune-epochs", "1",
                 "--final-epochs", "2", "--share-epochs", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert (f"{path}: 60 samples, 3 feature columns, labels from 'species' (the only column "
            f"of names); classes 0 = setosa, 1 = versicolor, 2 = virginica"
            in " ".join(captured.err.split()))
    report = json.loads(captured.out)
    assert report["provenance"]["train_samples"] == 60
    assert report["layers"][-1]["shape"][0] == 3          # an output per class
    assert main(["compress", "--data", str(path), "--label-column", "petal", "-o",
                 str(tmp_path / "n.sfm")]) == 2
    assert "no label column 'petal'" in capsys.readouterr().err
    assert not (tmp_path / "n.sfm").exists()


def test_sim_takes_a_table_of_inputs_with_or_without_labels(tmp_path, capsys, monkeypatch,
                                                           program_dir):
    import sparseforge as sf

    seen = {}

    def simulate(program, x, *, labels=None, **_):
        seen.update(x=x, labels=labels)
        raise RuntimeError("not simulated in this test")

    monkeypatch.setattr(sf, "simulate", simulate)
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.3f}" for v in rng.normal(size=6)) for _ in range(4)]
    header = ",".join(f"f{i}" for i in range(6))

    def sim(path, *options):
        return main(["sim", str(program_dir), "--inputs", str(path), "--build-dir",
                     str(tmp_path / "b"), *options])

    # The model's 6 features and no label column: no labels.
    assert sim(write(tmp_path / "x.csv", [header, *rows])) == 2
    assert "x.csv: 4 samples, 6 feature columns, no labels" in capsys.readouterr().err
    assert seen["x"].shape == (4, 6) and seen["labels"] is None
    # A seventh column of class names, all three of the model's classes: numbered in order.
    named = [f"{row},{name}" for row, name in zip(rows, ("b", "a", "c", "b"))]
    assert sim(write(tmp_path / "xy.csv", [header + ",kind", *named])) == 2
    told = " ".join(capsys.readouterr().err.split())
    assert "labels from 'kind' (the only column of names); classes 0 = a, 1 = b, 2 = c" in told
    assert "note: the program keeps no class names (its model was compressed from class " \
           "numbers)" in told
    assert seen["labels"].tolist() == [1, 0, 2, 1]
    # Names of two classes cannot be numbered as the training's three were.
    assert sim(write(tmp_path / "two.csv", [header + ",kind", *named[:2]])) == 2
    assert ("name 2 classes (a, b) and the model has 3: numbered in sorted order they would "
            "not be the training's numbers") in " ".join(capsys.readouterr().err.split())
    np.save(tmp_path / "y.npy", np.arange(4) % 3)
    assert sim(tmp_path / "xy.csv", "--labels", str(tmp_path / "y.npy")) == 2
    assert "the labels are" in capsys.readouterr().err
    assert sim(tmp_path / "x.csv", "--labels", str(tmp_path / "y.npy")) == 2
    assert seen["labels"].tolist() == [0, 1, 2, 0]


def test_report_counts_the_work_on_a_table_of_inputs(tmp_path, capsys, program_dir):
    rng = np.random.default_rng(1)
    rows = [",".join(f"{v:.3f}" for v in rng.normal(size=6)) + f",{i % 3}" for i in range(5)]
    path = write(tmp_path / "x.csv", rows)
    assert main(["report", str(program_dir), "--inputs", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert "x.csv: 5 samples, 6 feature columns, labels from column 6 (the last)" in \
        " ".join(captured.err.split())
    summary = json.loads(captured.out)
    assert summary["cycles_per_inference"] > 0 and "cycle model" in summary["cycles_source"]


def test_a_regression_table_takes_its_label_column_as_target_values(tmp_path):
    path = write(tmp_path / "t.csv", ["a,b,y", "1,2,0.25", "3,4,-1.5"])
    table = load_table(path, targets=True)
    assert table.y.dtype == np.float32 and table.y.tolist() == [0.25, -1.5]
    with pytest.raises(InputError, match=r"u.csv line 3, 'y': 'big' is not a number; a "
                                         r"regression's targets are values"):
        load_table(write(tmp_path / "u.csv", ["a,b,y", "1,2,0.25", "3,4,big"]), targets=True)


@pytest.mark.parametrize("text,told", [
    ("\ufeffa,b,label\r\n1.5,2,0\r\n3,4,1\r\n", ""),                   # Excel: BOM, CRLF
    ('"a","b","label"\n"1.5","2",0\n"3","4",1\n', ""),                  # quoted cells
    ("a,b,label,\n1.5,2,0,\n3,4,1,\n", "; 1 empty column left out"),    # a delimiter at the end
    ("a;b;label\n1,5;2;0\n3;4;1\n", ""),                                # decimal commas
    (",a,b,label\n0,1.5,2,0\n1,3,4,1\n",                                # DataFrame.to_csv()
     "; the unnamed first column counts the lines from 0 (pandas' index): left out"),
])
def test_tables_as_spreadsheets_and_pandas_write_them(tmp_path, text, told):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    table = load_table(path)
    np.testing.assert_allclose(table.x, [[1.5, 2], [3, 4]])
    assert table.y.tolist() == [0, 1]
    assert table.describe(path).endswith("labels from 'label'" + told)


def test_a_test_table_is_reported_on_with_the_training_tables_numbering(tmp_path, capsys):
    train = iris_like(tmp_path / "train.csv")
    test = write(tmp_path / "test.csv", ["sepal_length,sepal_width,species,petal_length",
                                         "2.1,2.0,virginica,1.9", "1.0,1.1,versicolor,0.9"])
    common = ["compress", "--data", str(train), "--test-data", str(test), "--sparsity", "0.5",
              "--prune-steps", "1", "--prune-epochs", "1", "--final-epochs", "2",
              "--share-epochs", "2", "-o", str(tmp_path / "m.sfm"), "--json"]
    assert main(common) == 0
    captured = capsys.readouterr()
    # Two classes named, numbered as the training table's three: 2 and 1, not 1 and 0.
    assert ("test.csv: 2 samples, 3 feature columns, labels from 'species' (the only column "
            "of names); classes 0 = setosa, 1 = versicolor, 2 = virginica"
            in " ".join(captured.err.split()))
    report = json.loads(captured.out)
    assert report["provenance"]["test_samples"] == 2
    assert report["accuracy_data"] == "test data"
    assert load_table(test, class_names=SPECIES).y.tolist() == [2, 1]
    write(test, ["sepal_length,sepal_width,species,petal_length", "2.1,2.0,iris,1.9"])
    assert main(common) == 2
    assert ("test.csv: the labels ('species' (the only column of names)) name 'iris', which "
            "the training data does not (its classes: setosa, versicolor, virginica)"
            in " ".join(capsys.readouterr().err.split()))
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 3)), y_train=np.arange(4) % 2)
    assert main([*common[:2], str(tmp_path / "d.npz"), *common[3:]]) == 2
    assert "goes with a .csv --data, both tables" in capsys.readouterr().err


def test_the_program_keeps_the_class_names_so_a_test_table_may_name_fewer(tmp_path, capsys,
                                                                         monkeypatch):
    """A test table naming two of the training's three classes was refused by ``sim`` (in
    sorted order its names would be 0 and 1): the names travel from ``compress`` through the
    model into the program, which numbers a table's names as the training's."""
    import sparseforge as sf
    from sparseforge.compiler.program import ProgramError

    model, program_path = tmp_path / "m.sfm", tmp_path / "program"
    assert main(["compress", "--data", str(iris_like(tmp_path / "iris.csv")), "-o", str(model),
                 "--sparsity", "0.5", "--prune-steps", "1", "--prune-epochs", "1",
                 "--final-epochs", "1", "--share-epochs", "1"]) == 0
    assert main(["compile", str(model), "-o", str(program_path), "--pes", "2"]) == 0
    capsys.readouterr()
    assert sf.load_program(program_path).class_names == SPECIES
    seen = {}

    def simulate(program, x, *, labels=None, **_):
        seen.update(labels=labels)
        raise RuntimeError("not simulated in this test")

    monkeypatch.setattr(sf, "simulate", simulate)
    test = write(tmp_path / "test.csv", ["sepal_length,sepal_width,species,petal_length",
                                         "2.1,2.0,virginica,1.9", "1.0,1.1,versicolor,0.9"])
    assert main(["sim", str(program_path), "--inputs", str(test), "--build-dir",
                 str(tmp_path / "b")]) == 2
    assert seen["labels"].tolist() == [2, 1]
    # run prints the predictions by name (the board's answer given here: no board attached).
    from sparseforge.boards import device, program_run

    monkeypatch.setattr(device, "SerialTransport", lambda port, baud: None)
    monkeypatch.setattr(program_run, "run_program", lambda *_, **__: program_run.ProgramRun(
        np.array([[0, 5, 1], [9, 0, 0]]), np.array([100, 100]), [60, 40], 0.01))
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    assert main(["run", str(program_path), "--input", str(tmp_path / "x.npy"), "--port",
                 str(tmp_path / "tty"), "--json"]) == 0
    ran = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert ran["predictions"] == [1, 0] and ran["class_names"] == list(SPECIES)
    assert main(["run", str(program_path), "--input", str(tmp_path / "x.npy"), "--port",
                 str(tmp_path / "tty")]) == 0
    assert "predictions: ['versicolor', 'setosa']" in capsys.readouterr().out
    manifest = program_path / "program.json"
    saved = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**saved, "class_names": ["setosa", "setosa", "x"]}))
    with pytest.raises(ProgramError, match="'class_names' must name each of the model's 3 "
                                           "classes once"):
        sf.load_program(program_path)


def test_a_test_table_of_names_beside_a_training_table_of_numbers_is_refused(tmp_path, capsys):
    """Numbered in sorted order, the test table's names need not be the training's numbers:
    the accuracy on test data came out 0.56% for a model at 97%."""
    train = iris_like(tmp_path / "train.csv")
    numbered = write(tmp_path / "test.csv", ["sepal_length,sepal_width,species,petal_length",
                                             "2.1,2.0,2,1.9", "1.0,1.1,1,0.9"])
    common = ["compress", "--sparsity", "0.5", "--prune-steps", "1", "--prune-epochs", "1",
              "--final-epochs", "1", "--share-epochs", "1", "-o", str(tmp_path / "m.sfm"),
              "--label-column", "species"]
    assert main([*common, "--data", str(train), "--test-data", str(numbered)]) == 2
    assert ("test.csv: the labels are class numbers and " in capsys.readouterr().err)
    assert main([*common, "--data", str(numbered), "--test-data", str(train)]) == 2
    assert ("train.csv: the labels are class names and " in capsys.readouterr().err)
    assert not (tmp_path / "m.sfm").exists()
