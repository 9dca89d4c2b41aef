"""``sparseforge compress [MODEL]``: prune, share and quantize a model; write a ``.sfm`` file.

MODEL is an ONNX file or a PyTorch state_dict (``.pt``, loaded with ``weights_only=True``) of
the default digits MLP; without MODEL the embedded default (the digits MLP) is trained first.
Data: ``--data DATA.npz`` with ``x_train, y_train`` and optionally ``x_val, y_val, x_test,
y_test``; without it the digits data set (scikit-learn's bundled copy).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .common import add_json_flag, console_for, emit_json, fail


def register(verbs) -> None:
    parser = verbs.add_parser("compress", help="prune, share and quantize a model (.sfm out)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="ONNX file or .pt state_dict (default: the "
                                                 "embedded digits MLP, trained first)")
    parser.add_argument("-o", "--output", default="build/model.sfm", help="the .sfm file")
    parser.add_argument("--data", help=".npz with x_train, y_train [, x_val, y_val, x_test, "
                                       "y_test]")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--weight-bits", type=int, default=4)
    parser.add_argument("--act-bits", type=int, default=8, choices=(8, 16))
    parser.add_argument("--coef-bits", type=int, default=8, choices=(8, 16))
    parser.add_argument("--balance-pes", type=int, help="load-balance-aware pruning for N PEs")
    parser.add_argument("--sensitivity-budget", type=float,
                        help="choose per-layer sparsities from a sensitivity scan")
    parser.add_argument("--seed", type=int, default=0)
    add_json_flag(parser)
    parser.set_defaults(run=run)


def load_model(path: Path | None):
    """The model to compress: ONNX, a state_dict of the digits MLP, or the trained default."""
    from sparseforge.compiler.compress.digits import digits_mlp, train_digits_float

    if path is None:
        return train_digits_float(progress=True)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    if path.suffix.lower() == ".onnx":
        return path
    import pickle

    import torch

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError) as error:
        raise ValueError(f"{path}: cannot be loaded with weights_only=True, so it needs "
                         f"pickle, which sparseforge never runs on user files; save a "
                         f"state_dict (torch.save(model.state_dict(), ...)) or export ONNX "
                         f"({str(error).splitlines()[0]})") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state_dict, found {type(state).__name__}")
    hidden = state.get("fc1.weight", torch.empty(0, 0)).shape[0]
    model = digits_mlp(hidden or 128)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: the state_dict does not fit the digits MLP "
                         f"(64 -> hidden -> 10): {str(error).splitlines()[0]}") from error
    return model


def load_data(path: Path | None):
    from sparseforge.compiler.compress.digits import load_digits_split

    if path is None:
        train, val, test = load_digits_split()
        return (train.x, train.y), (val.x, val.y), (test.x, test.y)
    with np.load(path, allow_pickle=False) as data:
        missing = {"x_train", "y_train"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(sorted(missing))}")
        pair = lambda name: ((data[f"x_{name}"], data[f"y_{name}"])  # noqa: E731
                             if f"x_{name}" in data.files else None)
        return pair("train"), pair("val"), pair("test")


def run(args) -> int:
    import sparseforge as sf
    from sparseforge.compiler.compress.report import render

    console = console_for(args)
    try:
        model = load_model(Path(args.model) if args.model else None)
        train, val, test = load_data(Path(args.data) if args.data else None)
        with console.status("compressing (prune and retrain, share, quantize)..."):
            compressed = sf.compress(
                model, train, val, test=test, sparsity=args.sparsity,
                weight_bits=args.weight_bits, act_bits=args.act_bits, coef_bits=args.coef_bits,
                balance_pes=args.balance_pes, sensitivity_budget=args.sensitivity_budget,
                seed=args.seed, progress=not args.json)
    except (ValueError, TypeError) as error:
        return fail(str(error))
    path = compressed.save(args.output)
    render(compressed.report, console)
    console.print(f"wrote {path}")
    emit_json(args, {**compressed.report.to_json(), "output": str(path),
                     "provenance": compressed.provenance})
    return 0
