"""``sparseforge compress [MODEL]``: prune, share and quantize a model; write a ``.sfm`` file.

MODEL is an ONNX file, or a PyTorch state_dict (``.pt``/``.pth``, loaded with
``torch.load(..., weights_only=True)``: never pickle) of the default MLP (``fc1``, ReLU,
``fc2``, of any width: the digits' 64-128-10 or one trained on other data), possibly pruned
with ``torch.nn.utils.prune`` (``weight_orig`` and ``weight_mask``).  Without MODEL the embedded
default is trained first: a 64-128-10 MLP on scikit-learn's bundled 8x8 digits, or with
``--data`` an MLP of the same kind (features -> 128 -> classes) on the data's training set.
Data: ``--data DATA.npz`` with ``x_train, y_train`` and optionally ``x_val, y_val, x_test,
y_test``, or ``--data TABLE.csv`` (``table.py``: feature columns and a label column, the
training set); without it the digits data set's fixed train / validation / test split.

The report is Deep Compression's table (dense = 32 bits per weight and bias; compressed = CSC
entries incl. padding x (code + 4-bit relative index) + codebooks + biases), with the column
pointers and the Huffman-coded size on their own lines, and accuracy before and after (the
"after" computed with the integer arithmetic of the engine).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np

from .common import (add_json_flag, check_writable, console_for, emit_json, fail, load_npz,
                     lowercase_keys, stderr_console)


def register(verbs) -> None:
    parser = verbs.add_parser("compress", help="prune, share and quantize a model (.sfm out)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="ONNX file or .pt state_dict (default: an "
                                                 "MLP trained first: features -> 128 -> "
                                                 "classes, on --data or the digits)")
    parser.add_argument("-o", "--output", default="build/model.sfm",
                        help="the .sfm file to write (default: build/model.sfm)")
    parser.add_argument("--data", help=".npz with x_train, y_train [, x_val, y_val, x_test, "
                                       "y_test], or a .csv/.tsv table: the training set")
    parser.add_argument("--test-data", metavar="TABLE",
                        help="with a .csv --data: a second table, the test set the accuracies "
                             "are reported on (its class names numbered as --data's)")
    parser.add_argument("--task", choices=("classification", "regression"),
                        help="classification (labels are classes; the default) or regression "
                             "(targets are values: trained on the squared error, scored by "
                             "R²; needs MODEL)")
    parser.add_argument("--label-column", metavar="NAME",
                        help="with a .csv --data: the labels' column, a header name or a "
                             "0-based index (default: one headed label, target, class or y, "
                             "else the last)")
    parser.add_argument("--sparsity", type=float,
                        help="overall fraction of weights pruned (default 0.9, lowered to "
                             "0.8, 0.7, 0.5 or 0.3 where it loses more than two points on "
                             "the validation data; lowered, with a warning, where a "
                             "convolution would keep fewer than --min-weights-per-filter "
                             "weights per filter)")
    parser.add_argument("--min-weights-per-filter", type=int, metavar="N",
                        help="the fewest weights per filter a convolution keeps when the "
                             "overall sparsity is distributed (default 2; 0: none)")
    parser.add_argument("--weight-bits", type=int, default=4,
                        help="bits per weight: codebook index width, 1..8 (default 4)")
    parser.add_argument("--levels", type=int,
                        help="codebook entries incl. the zero, e.g. 3 for ternary (default "
                             "2**weight-bits)")
    parser.add_argument("--act-bits", type=int, default=8, choices=(8, 16),
                        help="width of the activations: the inputs and each layer's outputs")
    parser.add_argument("--coef-bits", type=int, default=8, choices=(8, 16),
                        help="width of the codebook values")
    parser.add_argument("--bias-bits", type=int,
                        help="bias width (default: as wide as the largest bias needs)")
    parser.add_argument("--max-acc-bits", type=int,
                        help="cap the accumulator width the engine needs (16 for iCE40)")
    parser.add_argument("--balance-pes", type=int, metavar="N",
                        help="load-balance-aware pruning: equal nonzeros for each of N PEs")
    parser.add_argument("--sensitivity-budget", type=float, metavar="LOSS",
                        help="choose per-layer sparsities from a sensitivity scan, each "
                             "layer's accuracy loss at most LOSS (e.g. 0.01)")
    parser.add_argument("--learning-rate", type=float, metavar="RATE",
                        help="fine-tuning learning rate (Adam; default 0.002): well below a "
                             "layer's typical weight")
    parser.add_argument("--swap-activations", action="store_true",
                        help="run ReLU in the place of hidden activations the engine does not "
                             "have (GELU, Tanh, LeakyReLU, ...) and retrain the model before "
                             "compressing it (otherwise they are refused)")
    schedule = parser.add_argument_group(
        "training schedule", "the epochs of each phase (Adam, batches of 64).  The defaults "
        "(164 epochs in all) hold up to 4096 training samples; on more, each phase not given "
        "is shortened in proportion (15 epochs on 60,000).  Fewer for a large model")
    schedule.add_argument("--prune-steps", type=int, metavar="N",
                          help="prune gradually in N steps; 8 by default")
    schedule.add_argument("--prune-epochs", type=int, metavar="N",
                          help="epochs of retraining after each pruning step; 8 by default, "
                               "fewer on large data")
    schedule.add_argument("--final-epochs", type=int, metavar="N",
                          help="epochs of fine-tuning the pruned model; 60 by default, fewer "
                               "on large data")
    schedule.add_argument("--share-epochs", type=int, metavar="N",
                          help="epochs of training the shared weights; 40 by default, fewer "
                               "on large data")
    schedule.add_argument("--swap-epochs", type=int, metavar="N",
                          help="epochs of retraining after --swap-activations; 30 by default, "
                               "fewer on large data")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the training, the k-means and the default model, "
                             "0 .. 2**32-1")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def load_model(path: Path | None, *, progress: bool = True, seed: int = 0, train=None,
               classes: int | None = None):
    """The model to compress: an ONNX path, a state_dict of the default MLP, or the trained
    default (on ``train``, the user's ``(X, y)``, when given, with ``classes`` outputs, by
    default one per class of ``train``).  Checkpoints that need pickle are refused."""
    from sparseforge.compiler.compress.digits import HIDDEN, digits_mlp, train_float
    from sparseforge.compiler.compress.training import as_dataset
    from sparseforge.compiler.errors import no_such_file

    if path is None:
        data = as_dataset(train, "train") if train is not None else None
        return train_float(progress=progress, seed=seed, data=data, classes=classes)
    if not path.is_file():
        raise ValueError(no_such_file(path, "model"))
    if path.suffix.lower() == ".onnx":
        return path
    if path.suffix.lower() == ".sfm":
        raise ValueError(f"{path} is a compressed model already (.sfm): compile it "
                         f"(sparseforge compile {path}); compress takes the float model "
                         f"(.onnx, or the default MLP's state_dict)")
    data_archive = not_a_model(path)
    if data_archive:
        raise ValueError(data_archive)
    state = effective_state(unwrapped_state(load_state_dict(path)))
    if "fc1.weight" not in state:
        raise ValueError(f"{path}: the state_dict has no 'fc1.weight'; it must be one of the "
                         f"default MLP (fc1, ReLU, fc2); other models: export ONNX or call "
                         f"sf.compress from Python (keys found: {', '.join(sorted(state))})")
    # The default MLP's shape, inputs -> hidden -> classes, read from the weights (the digits'
    # 64 -> 128 -> 10 where they do not say): the MLP `compress --data` trains has any.
    fc1, fc2 = state["fc1.weight"], state.get("fc2.weight")
    hidden, inputs = fc1.shape if fc1.ndim == 2 else (HIDDEN, 64)
    classes = fc2.shape[0] if fc2 is not None and fc2.ndim == 2 else 10
    model = digits_mlp(hidden, inputs=inputs, classes=classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        # torch's first line only says "Error(s) in loading state_dict"; the keys and sizes
        # that are wrong follow it.
        details = " ".join(line.strip() for line in str(error).splitlines()[1:] if line.strip())
        raise ValueError(f"{path}: the state_dict does not fit the default MLP "
                         f"(fc1, ReLU, fc2, with biases): {details or error}; other models: "
                         f"export ONNX or call sf.compress from Python") from error
    return model


def npz_keys(path: Path) -> list[str] | None:
    """The array names of ``path`` when it is an ``.npz`` archive (np.savez: a zip of
    ``NAME.npy`` files, at its top level); None for any other file (a torch checkpoint is a zip
    too, but of a folder)."""
    names = _zip_names(path)
    if names is None:
        return None
    if path.suffix.lower() != ".npz" and not any(
            name.endswith(".npy") and "/" not in name for name in names):
        return None
    return [name[:-4] for name in names if name.endswith(".npy")]


def not_a_model(path: Path, flag: str | None = None) -> str | None:
    """The message for a model path that names an ``.npz`` archive of arrays (the data given
    where the model goes, ``--data`` forgotten), or None.  ``flag`` is the model's option
    (``"--model"``) where it is not the positional argument."""
    keys = npz_keys(path)
    if keys is None:
        return None
    if "x_train" in keys:
        return (f"{path}: is an .npz of data ({', '.join(keys)}), not a model: pass it as "
                f"--data {path} (and a model{' with ' + flag if flag else ''}, or none for "
                f"the default MLP)")
    return (f"{path}: is an .npz archive of arrays ({', '.join(keys) or 'none'}), not a "
            f"model: a model is an ONNX file or a .pt state_dict, and data (an .npz of "
            f"x_train, y_train [, x_val, y_val, x_test, y_test]) goes in --data")


def load_state_dict(path: Path) -> dict:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only."""
    import pickle

    import torch

    if is_torchscript(path):
        # torch.load would warn that it dispatches to torch.jit.load, then refuse the file
        # without saying what it is.
        raise ValueError(f"{path}: is a TorchScript archive (torch.jit.save), which "
                         f"sparseforge does not read: export the original module to ONNX "
                         f"(torch.onnx.export) or call sf.compress(model, ...) from Python")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, KeyError,
            ValueError, IndexError, TypeError) as error:
        # Not a checkpoint at all (torch's unpickler then fails with whatever byte it met:
        # "KeyError: 101") or one that needs pickle: either way the user's file, not a bug.
        raise ValueError(f"{path}: cannot be loaded with torch.load(weights_only=True): it "
                         f"needs pickle (a whole saved module?) or is damaged, and "
                         f"sparseforge never unpickles user files; export the model to ONNX "
                         f"(torch.onnx.export) or call sf.compress(model, ...) from Python "
                         f"(a state_dict is taken for the default MLP only: fc1, ReLU, fc2)"
                         f"{_unpickler_reason(error)}") from error
    def is_state_dict(value) -> bool:
        return (isinstance(value, dict) and bool(value)
                and all(isinstance(v, torch.Tensor) for v in value.values()))

    if isinstance(state, dict) and not is_state_dict(state):
        # A training checkpoint: {"model_state_dict": ..., "optimizer_state_dict": ...,
        # "epoch": 7} (an optimizer's state is not names -> tensors).  Its one state_dict is
        # the model's.
        inner = [key for key, value in state.items() if is_state_dict(value)]
        if len(inner) == 1:
            return state[inner[0]]
        if inner:
            raise ValueError(f"{path}: is a checkpoint of several state_dicts "
                             f"({', '.join(map(str, inner))}); save the model's alone: "
                             f"torch.save(checkpoint[{inner[0]!r}], 'model.pt')")
        raise ValueError(f"{path}: expected a state_dict (names -> tensors), found "
                         + (f"a dict of {', '.join(map(str, list(state)[:8]))}" if state
                            else "an empty dict"))
    if not is_state_dict(state):
        raise ValueError(f"{path}: expected a state_dict (names -> tensors), found "
                         f"{type(state).__name__}")
    return state


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip whose folder holds ``constants.pkl``
    (torch's own test) or the scripted ``code/``; a state_dict's zip holds neither."""
    return any(name.split("/", 1)[-1] == "constants.pkl" or "/code/" in name
               for name in _zip_names(path) or ())


def _zip_names(path: Path) -> list[str] | None:
    """The member names of ``path`` when it is a zip archive that opens, else None."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None


def _unpickler_reason(error: Exception) -> str:
    """torch's reason for refusing a file, as `` (reason)``, without its advice to load it
    with ``weights_only=False`` (which would run the file's code)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        # The reason follows the marker (on its line or the next); torch's advice after it.
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n")[0]
        reason = reason.split(". Please use")[0].split(" Check the documentation")[0].strip()
        if reason:
            return f" ({reason})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and "weights_only" not in lines[0] and not lines[0].startswith("Weights only"):
        return f" ({lines[0]})"
    return f" ({type(error).__name__})" if not lines else ""


def unwrapped_state(state: dict) -> dict:
    """The state_dict of a model saved inside a wrapper without the wrapper's prefix on every
    key: ``module.`` (``nn.DataParallel``, ``DistributedDataParallel``) or ``_orig_mod.``
    (``torch.compile``)."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(str(key).startswith(prefix) for key in state):
            return unwrapped_state({key[len(prefix):]: value for key, value in state.items()})
    return state


def effective_state(state: dict) -> dict:
    """A state_dict of a model pruned with ``torch.nn.utils.prune`` (``<p>_orig`` and
    ``<p>_mask``) as plain parameters ``<p> = <p>_orig * <p>_mask``; others unchanged."""
    out = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[:-5] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            out[key[:-5]] = value * state[key[:-5] + "_mask"]
        else:
            out[key] = value
    return out


def check_default_data(model, path: Path) -> None:
    """Without ``--data`` the data is the digits (64 features): say so, before any training,
    when the model (an ONNX path or a module read from ``path``) takes another width."""
    from sparseforge.compiler.capture import capture
    from sparseforge.compiler.errors import InputError

    width = capture(model).input_size
    if width != 64:
        raise InputError(f"{path} takes {width} inputs, and without --data the data is "
                         f"the default, scikit-learn's 8x8 digits (64 features): pass --data "
                         f"with an .npz of x_train, y_train (and x_val, y_val, x_test, y_test) "
                         f"for this model")


def _flattened(x):
    x = np.asarray(x)
    return x.reshape(len(x), -1) if x.ndim > 2 else x


def _classes(*pairs) -> int | None:
    """One more than the largest label of the sets given, NaN and infinities skipped (None
    when they hold no finite number: as_dataset then names what is wrong with them, NaN
    labels included)."""
    largest = []
    for pair in pairs:
        labels = np.asarray(pair[1]) if pair is not None else np.zeros(0)
        if labels.dtype.kind not in "iuf":
            continue
        labels = labels[np.isfinite(labels)] if labels.dtype.kind == "f" else labels
        if labels.size:
            largest.append(labels.max())
    return int(max(largest)) + 1 if largest else None


def _regression_outputs(args) -> int:
    """How many outputs the regression MODEL has, so that a table's last as many columns are
    its targets; 1 when the model cannot be read as it is (compress then says why, or swaps
    the activations it was asked to)."""
    from sparseforge.compiler.compress.convert import to_network

    try:
        return to_network(load_model(Path(args.model), progress=False),
                          regression=True).output_size
    except Exception:           # noqa: BLE001 - a probe: compress reads the model again
        return 1


def load_data(path: Path | None, label_column: str | None = None, console=None, *,
              regression: bool = False, test_path: Path | None = None, outputs: int = 1,
              class_names: list | None = None):
    """The training, validation and test pairs (x, y) of ``--data`` (each None where the
    data has none; the digits without it).  A table whose labels are names numbers them in
    sorted order, and appends the names to ``class_names`` where it is given."""
    from sparseforge.compiler.compress.digits import load_digits_split
    from sparseforge.compiler.errors import InputError

    from .table import is_table, load_table

    if test_path is not None and not (path is not None and is_table(path)
                                      and is_table(test_path)):
        raise InputError(f"--test-data {test_path} goes with a .csv --data, both tables (an "
                         f".npz --data holds its test set as x_test, y_test; the digits have "
                         f"their own)")
    if path is None:
        if label_column is not None:
            raise InputError("--label-column chooses a column of a .csv --data; there is none")
        train, val, test = load_digits_split()
        return (train.x, train.y), (val.x, val.y), (test.x, test.y)
    if is_table(path):
        train = load_table(path, label_column, targets=regression, outputs=outputs)
        # The test table's class names are numbered as the training table's.
        test = None if test_path is None else load_table(
            test_path, label_column, targets=regression, outputs=outputs,
            class_names=train.class_names)
        if test is not None and not regression and (
                (train.class_names is None) != (test.class_names is None)):
            raise InputError(f"{test_path}: the labels are class "
                             f"{'names' if test.class_names else 'numbers'} and {path}'s are "
                             f"class {'names' if train.class_names else 'numbers'}: give "
                             f"both tables the same kind of labels (names are numbered in "
                             f"sorted order, which need not be the numbers' order)")
        if console is not None:
            for where, table in ((path, train), (test_path, test)):
                if table is not None:
                    console.print(table.describe(where), highlight=False)
        if class_names is not None and train.class_names:
            class_names.extend(train.class_names)
        return (train.x, train.y), None, None if test is None else (test.x, test.y)
    if label_column is not None:
        raise InputError(f"--label-column chooses a column of a .csv table; {path} is not one")
    arrays = lowercase_keys(load_npz(path))
    if not {"x_train", "x_val", "x_test"} & set(arrays) and {"x", "y"} <= set(arrays):
        # One set, named as most people name it: the training data, as a CSV's table is.
        arrays["x_train"], arrays["y_train"] = arrays.pop("x"), arrays.pop("y")
        if console is not None:
            console.print(f"{path}: x, y read as the training data (x_test, y_test in the "
                          f"archive give a test set to report accuracy on)", highlight=False)
    missing = {"x_train", "y_train"} - set(arrays)
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(sorted(missing))} (has "
                         f"{', '.join(sorted(arrays))})")

    def pair(name):
        if f"x_{name}" not in arrays:
            return None
        if f"y_{name}" not in arrays:
            raise ValueError(f"{path}: has x_{name} but not y_{name}")
        return arrays[f"x_{name}"], arrays[f"y_{name}"]

    return pair("train"), pair("val"), pair("test")


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.compiler.compress.accounting import render
    from sparseforge.compiler.compress.api import (DEFAULT_FALLBACK_LOSS,
                                                   CompressionConfig, fallback_summary)
    from sparseforge.compiler.errors import InputError, SparsityLowered

    from .table import is_table

    console = console_for(args)
    start = time.perf_counter()
    try:
        options = {name: getattr(args, name) for name in
                   ("levels", "bias_bits", "max_acc_bits", "balance_pes",
                    "sensitivity_budget", "learning_rate", "prune_steps", "prune_epochs",
                    "final_epochs", "share_epochs", "swap_epochs", "min_weights_per_filter")
                   if getattr(args, name) is not None}
        if args.swap_activations:
            options["swap_activations"] = True
        if args.task is not None:
            options["task"] = args.task
        if args.sparsity is not None and args.sensitivity_budget is not None:
            # The scan chooses every layer's sparsity: the one given would be ignored.
            raise ValueError(f"give --sparsity or --sensitivity-budget, not both: the "
                             f"sensitivity scan chooses each layer's sparsity, and "
                             f"--sparsity {args.sparsity:g} would be ignored")
        if args.sparsity is None and args.sensitivity_budget is None:
            # The default lowers itself where it costs the model more than two points.
            options["fallback_loss"] = DEFAULT_FALLBACK_LOSS
        config = CompressionConfig(
            sparsity=0.9 if args.sparsity is None else args.sparsity,
            weight_bits=args.weight_bits, act_bits=args.act_bits,
            coef_bits=args.coef_bits, seed=args.seed, **options)
        check_writable(args.output)
        regression = args.task == "regression"
        if regression and args.model is None:
            raise InputError("--task regression needs your MODEL: the model sparseforge trains "
                             "without one is a classifier")
        if regression and args.data is None:
            raise InputError("--task regression needs --data: the default data (the digits) "
                             "is for classification")
        data_path = Path(args.data) if args.data else None
        # Only a table whose target columns nobody named needs the model's output count.
        probe = (regression and data_path is not None and args.label_column is None
                 and is_table(data_path))
        class_names = []
        train, val, test = load_data(data_path, args.label_column, stderr_console(),
                                     regression=regression,
                                     test_path=Path(args.test_data) if args.test_data else None,
                                     outputs=_regression_outputs(args) if probe else 1,
                                     class_names=class_names)
        if args.model is None and args.data:
            # The default is an MLP: it takes each sample flattened (images too), and has
            # an output for every class any of the sets names.
            train, val, test = (None if pair is None else (_flattened(pair[0]), pair[1])
                                for pair in (train, val, test))
        model = load_model(Path(args.model) if args.model else None, seed=args.seed,
                           train=train if args.data else None,
                           classes=_classes(train, val, test) if args.data else None)
        if args.data is None and args.model is not None:
            check_default_data(model, Path(args.model))
        with warnings.catch_warnings():
            # Said in the summary, with each sparsity's loss.
            warnings.simplefilter("ignore", SparsityLowered)
            compressed = sf.compress(model, train, val, test=test, config=config,
                                     progress=True)
        if class_names:
            # The program keeps them, so a test table naming fewer classes is numbered as
            # this one was, and predictions can be told by name.
            compressed = dataclasses.replace(compressed, provenance={
                **compressed.provenance, "class_names": class_names})
    except (ValueError, TypeError) as error:
        return fail(str(error))
    try:
        path = compressed.save(args.output)
    except (ValueError, TypeError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write {args.output}: {error.strerror or error}"
                    + (f" ({error.filename})" if error.filename else ""))
    seconds = time.perf_counter() - start
    render(compressed.report, console)
    tried = compressed.provenance.get("sparsity_tried")
    if tried:
        judged_on = compressed.provenance["sparsity_tried_on"]
        console.print("sparsity: the default " + fallback_summary(
            tried, judged_on, compressed.provenance["config"]["sparsity"],
            compressed.report.metric == "r2") + " (--sparsity S chooses"
            + ("; validation data, x_val and y_val, keep the test data out of the choice)"
               if judged_on == "test data" else ")"), highlight=False)
    console.print(f"wrote {path} in {seconds:.1f} s")
    emit_json(args, {**compressed.report.to_json(), "output": str(path),
                     "seconds": round(seconds, 2), "provenance": compressed.provenance})
    return 0
