"""Storage accounting in Deep Compression's style, and the report table.

Dense: 32 bits per weight and per bias.  Compressed, per layer, as a single CSC with relative
indices (the EIE encoding for N = 1 PE): every entry (the nonzeros and the padding entries that
bridge zero runs longer than ``2**idx_bits - 1`` = 15) takes ``code_bits + idx_bits``; plus the
codebook (``2**code_bits x coef_bits``) and the biases (``bias_bits`` each).  With Huffman, the
codes and the relative indices of the entries are Huffman-coded instead, and the two code tables
are counted (canonical Huffman: one code length per symbol of each alphabet).  Column pointers
are listed on their own line and in a separate "with pointers" ratio, so nothing is hidden.

Where the engine's matrix holds more entries than the model has weights (a depthwise or grouped
kernel, zero between its groups; an average pooling folded into the Linear after it, each weight
repeated over its window) the weights, the nonzeros, the density and the dense baseline are the
model's (``model_weights``, ``model_nnz``: what the overall sparsity counts), and the compressed
storage the engine's.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass

import numpy as np

from ..encode import encode_csc
from ..ir import QuantizedLinear, QuantizedNetwork
from .huffman import huffman_lengths, huffman_table_bits

__all__ = [
    "IDX_BITS",
    "CompressionReport",
    "LayerReport",
    "account",
    "account_layer",
    "loss_hint",
    "model_weight_counts",
    "render",
]

IDX_BITS = 4        # the relative-index width of the engine's entries (EIE)


@dataclass(frozen=True)
class LayerReport:
    """The storage figures of one layer; every size is in bits."""
    name: str
    shape: tuple[int, int]          # (out, in); a convolution: its kernel matrix
    weights: int
    nnz: int
    padding: int                    # padding entries (zero runs over 15), N = 1
    code_bits: int                  # bits per weight (a codebook index)
    index_bits: int                 # bits per relative index
    coef_bits: int
    bias_bits: int
    dense_bits: int                 # 32 x (weights + biases)
    compressed_bits: int            # entries x (code + index) + codebook + biases
    huffman_bits: int               # the same with codes and indices Huffman-coded, + tables
    pointer_bits: int               # (in + 1) column pointers wide enough for the entries
    huffman_code_length: float      # average Huffman length of a code, bits
    huffman_index_length: float     # average Huffman length of a relative index, bits
    # The model's own weights and nonzeros where the matrix holds more entries (None: the
    # matrix's); the arrays do not say them, so a saved report keeps them.
    model_weights: int | None = None
    model_nnz: int | None = None

    @property
    def entries(self) -> int:
        return self.nnz + self.padding

    @property
    def own_weights(self) -> int:
        """The model's weights for this layer (the overall sparsity counts these)."""
        return self.weights if self.model_weights is None else self.model_weights

    @property
    def own_nnz(self) -> int:
        """The model's nonzero weights for this layer (a weight repeated counted once)."""
        return self.nnz if self.model_nnz is None else self.model_nnz

    @property
    def model_counts(self) -> tuple[int, int] | None:
        return None if self.model_weights is None else (self.model_weights, self.model_nnz)

    @property
    def density(self) -> float:
        return self.own_nnz / self.own_weights if self.own_weights else 0.0

    @property
    def compression_ratio(self) -> float:
        return self.dense_bits / self.compressed_bits


@dataclass(frozen=True)
class CompressionReport:
    """Per-layer figures, totals and the accuracies: float before compression, float after
    pruning and sharing (``accuracy_shared``), and the integer network's
    (``accuracy_quantized``, computed with ``QuantizedNetwork.forward``).  For a regression
    model (``metric`` "r2") the "accuracies" are R² (``training.score``)."""
    layers: tuple[LayerReport, ...]
    accuracy_float: float | None = None
    accuracy_quantized: float | None = None
    accuracy_data: str = ""
    accuracy_shared: float | None = None
    metric: str = "accuracy"

    @property
    def weights(self) -> int:
        return sum(layer.own_weights for layer in self.layers)

    @property
    def nnz(self) -> int:
        return sum(layer.own_nnz for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / self.weights

    def total(self, field: str) -> int:
        return sum(getattr(layer, field) for layer in self.layers)

    @property
    def compression_ratio(self) -> float:
        return self.total("dense_bits") / self.total("compressed_bits")

    @property
    def compression_ratio_huffman(self) -> float:
        return self.total("dense_bits") / self.total("huffman_bits")

    @property
    def compression_ratio_with_pointers(self) -> float:
        return self.total("dense_bits") / (self.total("compressed_bits")
                                           + self.total("pointer_bits"))

    @property
    def accuracy_drop(self) -> float | None:
        """Points of accuracy lost by compression (float before vs integer after)."""
        if self.accuracy_float is None or self.accuracy_quantized is None:
            return None
        return 100.0 * (self.accuracy_float - self.accuracy_quantized)

    def to_text(self, width: int = 100) -> str:
        """The report table as plain text (what :func:`render` prints)."""
        import io

        from rich.console import Console

        console = Console(file=io.StringIO(), width=width, color_system=None)
        render(self, console)
        return console.file.getvalue()

    def __str__(self) -> str:
        return self.to_text()

    def to_json(self) -> dict:
        return {
            "accuracy_float": self.accuracy_float,
            "accuracy_quantized": self.accuracy_quantized,
            "accuracy_shared": self.accuracy_shared,
            "accuracy_data": self.accuracy_data,
            "metric": self.metric,
            "sparsity": round(self.sparsity, 5),
            "compression_ratio": round(self.compression_ratio, 2),
            "compression_ratio_huffman": round(self.compression_ratio_huffman, 2),
            "compression_ratio_with_pointers": round(self.compression_ratio_with_pointers, 2),
            "weights": self.weights, "nonzeros": self.nnz,
            "dense_bits": self.total("dense_bits"),
            "compressed_bits": self.total("compressed_bits"),
            "huffman_bits": self.total("huffman_bits"),
            "pointer_bits": self.total("pointer_bits"),
            "layers": [{**asdict(layer), "shape": list(layer.shape),
                        "density": round(layer.density, 5)} for layer in self.layers],
        }

    @classmethod
    def from_json(cls, obj: dict) -> CompressionReport:
        fields = LayerReport.__dataclass_fields__
        layers = []
        for index, layer in enumerate(obj["layers"]):
            missing = sorted(name for name, field in fields.items()
                             if name not in layer and field.default is MISSING)
            if missing:
                raise ValueError(f"report layer {index} lacks {', '.join(missing)}")
            layers.append(LayerReport(**{k: (tuple(layer[k]) if k == "shape" else layer[k])
                                         for k in fields if k in layer}))
        return cls(tuple(layers), obj.get("accuracy_float"), obj.get("accuracy_quantized"),
                   obj.get("accuracy_data", ""), obj.get("accuracy_shared"),
                   obj.get("metric", "accuracy"))


def account_layer(layer: QuantizedLinear, idx_bits: int = IDX_BITS,
                  model_counts: tuple[int, int] | None = None) -> LayerReport:
    """The storage figures of one integer layer (see the module docstring); ``model_counts``:
    the model's weights and nonzeros where the matrix holds more entries
    (:func:`model_weight_counts`)."""
    csc = encode_csc(layer.codes, (1 << idx_bits) - 1)
    entries = len(csc.codes)
    # A convolution's figures are its kernel matrix's, stored once for every position.
    rows, columns = layer.codes.shape
    fixed = (1 << layer.code_bits) * layer.weight_format.bits + rows * layer.bias_bits
    code_lengths, index_lengths = huffman_lengths(csc.codes), huffman_lengths(csc.zero_runs)
    coded = (sum(code_lengths[int(c)] for c in csc.codes)
             + sum(index_lengths[int(z)] for z in csc.zero_runs))
    tables = (huffman_table_bits(code_lengths, 1 << layer.code_bits)
              + huffman_table_bits(index_lengths, 1 << idx_bits))
    return LayerReport(
        name=layer.name, shape=(rows, columns),
        weights=layer.codes.size, nnz=layer.nnz, padding=csc.padding,
        code_bits=layer.code_bits, index_bits=idx_bits,
        coef_bits=layer.weight_format.bits, bias_bits=layer.bias_bits,
        dense_bits=32 * (rows + (layer.codes.size if model_counts is None
                                 else model_counts[0])),
        compressed_bits=entries * (layer.code_bits + idx_bits) + fixed,
        huffman_bits=coded + tables + fixed,
        pointer_bits=(columns + 1) * max(1, math.ceil(math.log2(entries + 1))),
        huffman_code_length=_mean_length(code_lengths, csc.codes),
        huffman_index_length=_mean_length(index_lengths, csc.zero_runs),
        model_weights=None if model_counts is None else int(model_counts[0]),
        model_nnz=None if model_counts is None else int(model_counts[1]))


def model_weight_counts(model_layer, codes: np.ndarray) -> tuple[int, int] | None:
    """The model's weights and nonzeros for a layer whose matrix (``codes``) holds more
    entries than the model has weights, else None.  ``model_layer`` is the float layer as
    captured, before pruning: its ``parameters`` (a depthwise or grouped convolution, whose
    zeros between groups are not weights; a binary classifier's logit beside the zero row the
    compiler adds) and ``tied_columns`` (an average pooling folded into a Linear whose copies
    are tied: a weight is nonzero where any of its copies is).  An untied fold's copies are
    trained apart, so they are the matrix's own."""
    if model_layer.parameters is None:
        return None
    if model_layer.tied_columns is not None:
        rows, columns = np.nonzero(codes)
        kept = np.zeros((codes.shape[0], int(model_layer.tied_columns.max()) + 1), dtype=bool)
        kept[rows, model_layer.tied_columns[columns]] = True
        return model_layer.parameters, int(np.count_nonzero(kept))
    if np.count_nonzero(model_layer.weight) > model_layer.parameters:
        return None
    return model_layer.parameters, int(np.count_nonzero(codes))


def _mean_length(lengths: dict[int, int], symbols) -> float:
    if not len(symbols):
        return 0.0
    return round(sum(lengths[int(s)] for s in symbols) / len(symbols), 4)


def account(network: QuantizedNetwork, *, accuracy_float=None, accuracy_quantized=None,
            accuracy_data: str = "", accuracy_shared=None, metric: str = "accuracy",
            model_counts=None) -> CompressionReport:
    """Deep Compression's accounting of ``network``, with the accuracies (or R²) given;
    ``model_counts``, per layer, the model's weights and nonzeros where the matrix holds more
    entries (None: the matrix's)."""
    counts = model_counts or [None] * len(network.layers)
    return CompressionReport(tuple(account_layer(layer, model_counts=count)
                                   for layer, count in zip(network.layers, counts)),
                             accuracy_float, accuracy_quantized, accuracy_data,
                             accuracy_shared, metric)


def render(report: CompressionReport, console=None) -> None:
    """Deep Compression's table: per layer weights, density, bits per weight and per index,
    storage dense / compressed / Huffman-coded, ratio; totals, pointers, accuracies."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Deep Compression accounting (KiB; dense: 32-bit weights and biases; "
                        "compressed: CSC entries incl. padding x (code + 4-bit relative "
                        "index) + codebook + biases)", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False)
    headers = ("layer", "shape", "weights", "density", "bits/\nweight", "bits/\nindex",
               "dense", "compr.", "Huffman", "ratio")
    for header in headers:
        table.add_column(header, justify="left" if header == "layer" else "right",
                         no_wrap=True)
    for layer in report.layers:
        table.add_row(layer.name, f"{layer.shape[0]}x{layer.shape[1]}", f"{layer.weights:,}",
                      f"{100 * layer.density:.1f}%", str(layer.code_bits),
                      str(layer.index_bits), _kib(layer.dense_bits),
                      _kib(layer.compressed_bits), _kib(layer.huffman_bits),
                      f"{layer.compression_ratio:.1f}x")
    table.add_row("total", "", f"{report.weights:,}", f"{100 * (1 - report.sparsity):.1f}%",
                  "", "", _kib(report.total("dense_bits")),
                  _kib(report.total("compressed_bits")), _kib(report.total("huffman_bits")),
                  f"{report.compression_ratio:.1f}x", style="bold")
    console.print(table)
    console.print(f"compression ratio {report.compression_ratio:.1f}x, with Huffman coding "
                  f"{report.compression_ratio_huffman:.1f}x", highlight=False)
    console.print(f"column pointers: {_kib(report.total('pointer_bits'))} KiB more, "
                  f"{report.compression_ratio_with_pointers:.1f}x with them", highlight=False)
    if report.accuracy_float is not None and report.metric == "r2":
        where = f" on {report.accuracy_data}" if report.accuracy_data else ""
        shared = (f", pruned and shared float {report.accuracy_shared:.4f}"
                  if report.accuracy_shared is not None else "")
        console.print(f"R²{where}: float {report.accuracy_float:.4f}{shared}, compressed "
                      f"fixed point {report.accuracy_quantized:.4f}", highlight=False)
    elif report.accuracy_float is not None:
        where = f" on {report.accuracy_data}" if report.accuracy_data else ""
        shared = (f", pruned and shared float {100 * report.accuracy_shared:.2f}%"
                  if report.accuracy_shared is not None else "")
        drop = report.accuracy_drop
        change = (f"{drop:.2f} points lost" if drop >= 0 else f"{-drop:.2f} points gained")
        console.print(f"accuracy{where}: float {100 * report.accuracy_float:.2f}%{shared}, "
                      f"compressed fixed point {100 * report.accuracy_quantized:.2f}% "
                      f"({change})", highlight=False)
        hint = loss_hint(report)
        if hint:
            console.print(hint, highlight=False)


# Points of accuracy lost past which the summary says where they went and what keeps them.
LOSS_HINT_POINTS = 5.0


def loss_hint(report) -> str | None:
    """Where a large accuracy loss happened and what keeps more: in pruning and sharing (the
    pruned and shared float network already lost it), or in fixed point.  None below
    :data:`LOSS_HINT_POINTS`."""
    drop = report.accuracy_drop
    if drop is None or report.metric == "r2" or drop < LOSS_HINT_POINTS:
        return None
    if report.accuracy_shared is not None and \
            100 * (report.accuracy_float - report.accuracy_shared) >= LOSS_HINT_POINTS / 2:
        return ("most of it went in pruning and weight sharing: a lower --sparsity, a "
                "sensitivity scan that chooses each layer's (--sensitivity-budget 0.01), "
                "more levels (--weight-bits) or longer fine-tuning (--final-epochs) keep more")
    return ("most of it went in fixed point: wider activations or codebook values "
            "(--act-bits 16, --coef-bits 16) keep more")


def _kib(bits: int) -> str:
    return f"{bits / 8192:.2f}"
