"""Elementwise activations the engine runs as a table: Tanh, Sigmoid, GELU, SiLU, ELU, SELU,
CELU, Softplus, Mish, Hardswish, Hardsigmoid, Softsign, Tanhshrink, LogSigmoid.

A layer with one (``Linear.function``) is requantized to 8-bit pre-activations, and a table
of the function's values at each of the 256 codes gives its output (docs/numerics.md
"Activations as tables"): the definition is the table, so the engine, the golden model and
the compression stage agree bit for bit, and the function is the model's own (no
retraining with ReLU).  Each :class:`Function` is its name and parameters, PyTorch's
semantics in NumPy (float64) for the float network and its PyTorch module for training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["FUNCTIONS", "Function", "MONOTONE"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))          # exact and without overflow


def _softplus(x, beta=1.0, threshold=20.0):
    z = beta * x
    return np.where(z > threshold, x, np.logaddexp(0.0, z) / beta)


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _gelu(x, tanh=0.0):
    if tanh:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _celu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha))


# name -> (NumPy function of (x, *params), parameter names with PyTorch's defaults)
FUNCTIONS = {
    "tanh": (np.tanh, ()),
    "sigmoid": (_sigmoid, ()),
    "gelu": (_gelu, (("tanh", 0.0),)),
    "silu": (lambda x: x * _sigmoid(x), ()),
    "elu": (_elu, (("alpha", 1.0),)),
    "selu": (lambda x: _SELU_SCALE * _elu(x, _SELU_ALPHA), ()),
    "celu": (_celu, (("alpha", 1.0),)),
    "softplus": (_softplus, (("beta", 1.0), ("threshold", 20.0))),
    "mish": (lambda x: x * np.tanh(_softplus(x)), ()),
    "hardswish": (lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0, ()),
    "hardsigmoid": (lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0), ()),
    "softsign": (lambda x: x / (1.0 + np.abs(x)), ()),
    "tanhshrink": (lambda x: x - np.tanh(x), ()),
    "logsigmoid": (lambda x: -np.logaddexp(0.0, -x), ()),
}

# The functions that never decrease: they commute with max pooling (a convolution's pooling
# applies after its write-back).
MONOTONE = frozenset({"tanh", "sigmoid", "elu", "selu", "celu", "softplus", "hardsigmoid",
                      "softsign", "tanhshrink", "logsigmoid"})


@dataclass(frozen=True)
class Function:
    """An elementwise activation: ``name`` (a key of :data:`FUNCTIONS`) and its parameters in
    the order :data:`FUNCTIONS` lists them."""
    name: str
    params: tuple[float, ...] = ()

    def __post_init__(self):
        if self.name not in FUNCTIONS:
            raise ValueError(f"no activation function {self.name!r}; the engine's are "
                             f"{', '.join(sorted(FUNCTIONS))}")
        names = FUNCTIONS[self.name][1]
        params = tuple(float(p) for p in self.params) or tuple(d for _, d in names)
        if len(params) != len(names) or not all(math.isfinite(p) for p in params):
            raise ValueError(f"{self.name} takes {len(names)} finite parameters "
                             f"({', '.join(n for n, _ in names) or 'none'}), not {self.params}")
        object.__setattr__(self, "params", params)

    @classmethod
    def of(cls, name: str, **given) -> Function:
        """``name`` with the parameters ``given`` (by name) and PyTorch's defaults."""
        names = FUNCTIONS[name][1]
        unknown = set(given) - {n for n, _ in names}
        if unknown:
            raise ValueError(f"{name} has no parameter {', '.join(sorted(unknown))}")
        return cls(name, tuple(float(given.get(n, d)) for n, d in names))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return FUNCTIONS[self.name][0](np.asarray(x, dtype=np.float64), *self.params)

    @property
    def monotone(self) -> bool:
        return self.name in MONOTONE

    def __str__(self) -> str:
        names = FUNCTIONS[self.name][1]
        shown = ", ".join(f"{n}={p:g}" for (n, d), p in zip(names, self.params) if p != d)
        return f"{self.name}({shown})" if shown else self.name

    def torch_module(self):
        """The PyTorch module computing it (for training the float network)."""
        import torch.nn as nn

        p = self.params
        return {"tanh": lambda: nn.Tanh(), "sigmoid": lambda: nn.Sigmoid(),
                "gelu": lambda: nn.GELU(approximate="tanh" if p and p[0] else "none"),
                "silu": lambda: nn.SiLU(), "elu": lambda: nn.ELU(p[0]), "selu": lambda: nn.SELU(),
                "celu": lambda: nn.CELU(p[0]), "softplus": lambda: nn.Softplus(p[0], p[1]),
                "mish": lambda: nn.Mish(), "hardswish": lambda: nn.Hardswish(),
                "hardsigmoid": lambda: nn.Hardsigmoid(), "softsign": lambda: nn.Softsign(),
                "tanhshrink": lambda: nn.Tanhshrink(),
                "logsigmoid": lambda: nn.LogSigmoid()}[self.name]()

    def to_json(self) -> list:
        return [self.name, list(self.params)]

    @classmethod
    def from_json(cls, value) -> Function:
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                and isinstance(value[1], list)):
            raise ValueError(f"an activation function is [name, [parameters]], not {value!r}")
        return cls(value[0], tuple(value[1]))
