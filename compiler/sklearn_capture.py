"""Capture of a scikit-learn multilayer perceptron, alone or at the end of a ``Pipeline`` of
scalers, into the same :class:`~.ir.Graph` a PyTorch module is captured into.

``MLPClassifier`` and ``MLPRegressor`` keep their weights as ``coefs_`` (in x out per layer)
and ``intercepts_``, their hidden activation as ``activation`` (``relu``, the default, and
``identity`` run on the engine as they are, ``tanh`` and ``logistic`` as tables with 8-bit
activations: ``activations.py``) and their output's as
``out_activation_`` (``softmax``, ``logistic`` for a binary classifier's one logit, or
``identity``): a final Softmax or Sigmoid the passes drop, as for a module.  A scaler in front
(``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``) is an affine map of
each feature, captured as an elementwise scale and shift: the inputs' scaling, which the host
applies before quantizing (``ir.InputScaling``), so the program takes raw features as the
pipeline does.  The model is read, never unpickled here: the caller holds the object.
"""

from __future__ import annotations

import numpy as np

from .activations import Function
from .capture import check_graph
from .errors import InputError
from .ir import Graph, Op, OpKind

__all__ = ["capture_sklearn", "is_sklearn_model"]

_HIDDEN = {"relu": OpKind.RELU, "identity": None, "tanh": OpKind.FUNCTION,
           "logistic": OpKind.FUNCTION}
_FUNCTIONS = {"tanh": "tanh", "logistic": "sigmoid"}
_OUTPUT = {"softmax": OpKind.SOFTMAX, "logistic": OpKind.SIGMOID, "identity": None}


def is_sklearn_model(model) -> bool:
    """Whether ``model`` is a scikit-learn estimator (checked by its class's module, so that
    scikit-learn need not be imported for anything else)."""
    return type(model).__module__.split(".")[0] == "sklearn"


def is_sklearn_regressor(model) -> bool:
    """Whether ``model`` is a scikit-learn ``MLPRegressor``, alone or ending a Pipeline: its
    outputs are values, whatever task it is compressed for."""
    if not is_sklearn_model(model):
        return False
    last = model.steps[-1][1] if type(model).__name__ == "Pipeline" else model
    return type(last).__name__ == "MLPRegressor"


def capture_sklearn(model) -> Graph:
    """The Graph of a fitted ``MLPClassifier`` / ``MLPRegressor``, or of a ``Pipeline`` of
    scalers ending in one."""
    steps = ([(name, step) for name, step in model.steps if step not in (None, "passthrough")]
             if type(model).__name__ == "Pipeline" else [(type(model).__name__, model)])
    *scalers, (name, mlp) = steps
    if type(mlp).__name__ not in ("MLPClassifier", "MLPRegressor"):
        raise InputError(f"the scikit-learn model's {'last step' if scalers else 'estimator'} "
                         f"{name!r} is a {type(mlp).__name__}: sparseforge takes an "
                         f"MLPClassifier or MLPRegressor, alone or after scalers in a Pipeline")
    if not hasattr(mlp, "coefs_"):
        raise ValueError(f"the scikit-learn {type(mlp).__name__} is not fitted: call "
                         f"fit(X, y) first")
    ops = [_scaler(step_name, step) for step_name, step in scalers]
    hidden = _activation(mlp.activation, _HIDDEN, f"{name}.activation")
    last = len(mlp.coefs_) - 1
    for index, (weight, bias) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        ops.append(Op(OpKind.LINEAR, f"{name}.layer{index}",
                      {"weight": np.asarray(weight, dtype=np.float64).T,
                       "bias": np.asarray(bias, dtype=np.float64)}))
        kind = (_activation(mlp.out_activation_, _OUTPUT, f"{name}.out_activation_")
                if index == last else hidden)
        if kind is OpKind.SOFTMAX:
            ops.append(Op(kind, f"{name}.out_activation_", {}, {"axis": 1}))
        elif kind is OpKind.FUNCTION:
            ops.append(Op(kind, f"{name}.activation", {},
                          {"function": Function(_FUNCTIONS[mlp.activation])}))
        elif kind is not None:
            ops.append(Op(kind, f"{name}.{'out_activation_' if index == last else 'activation'}"))
    return check_graph(ops, int(mlp.coefs_[0].shape[0]), f"scikit-learn {type(model).__name__}")


def _activation(kind: str, known: dict, where: str):
    if kind not in known:
        raise InputError(f"the scikit-learn model's {where} is {kind!r}, which the engine does "
                         f"not run: it runs activation='relu' (the default), 'identity', "
                         f"'tanh' or 'logistic'")
    return known[kind]


def _scaler(name: str, scaler) -> Op:
    """A fitted scaler as the elementwise ``x * weight + bias`` it computes."""
    kind = type(scaler).__name__
    features = getattr(scaler, "n_features_in_", None)
    ones = np.ones(features or 1)
    if kind == "StandardScaler":
        mean = scaler.mean_ if scaler.with_mean else 0 * ones
        scale = scaler.scale_ if scaler.with_std else ones
        weight, bias = 1 / scale, -mean / scale
    elif kind == "MinMaxScaler":
        if getattr(scaler, "clip", False):
            raise InputError(f"the scikit-learn pipeline's step {name!r} is a "
                             f"MinMaxScaler(clip=True), whose clip the engine does not run: "
                             f"use clip=False")
        weight, bias = scaler.scale_, scaler.min_
    elif kind == "MaxAbsScaler":
        weight, bias = 1 / scaler.scale_, 0 * ones
    elif kind == "RobustScaler":
        center = scaler.center_ if scaler.with_centering else 0 * ones
        scale = scaler.scale_ if scaler.with_scaling else ones
        weight, bias = 1 / scale, -center / scale
    else:
        raise InputError(f"the scikit-learn pipeline's step {name!r} is a {kind}: the steps "
                         f"before the MLP may be StandardScaler, MinMaxScaler, MaxAbsScaler or "
                         f"RobustScaler")
    weight = np.asarray(weight, dtype=np.float64) * ones
    bias = np.asarray(bias, dtype=np.float64) * ones
    return Op(OpKind.BATCHNORM, name, {"weight": weight, "bias": bias},
              {"elementwise": f"{kind}'s scale and shift"})
