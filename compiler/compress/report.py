"""Storage accounting in Deep Compression's style, and the report table.

Dense: 32 bits per weight and per bias.  Compressed, per layer, as a single CSC with relative
indices (the N = 1 EIE encoding): every entry (nonzeros and the padding entries that bridge
zero runs longer than 15) takes ``code_bits + idx_bits``; plus the codebook
(``2**code_bits x coef_bits``) and the biases (``bias_bits`` each).  With Huffman, the codes and
the relative indices are Huffman-coded instead.  Column pointers are listed on their own line
and in a separate "with pointers" ratio, so nothing is hidden.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..encode import encode_csc
from ..ir import QuantizedNetwork
from .huffman import huffman_bits

__all__ = ["LayerReport", "CompressionReport", "account", "render"]

IDX_BITS = 4


@dataclass(frozen=True)
class LayerReport:
    name: str
    shape: tuple[int, int]          # (out, in)
    weights: int
    nnz: int
    padding: int
    code_bits: int
    index_bits: int
    coef_bits: int
    bias_bits: int
    dense_bits: int
    compressed_bits: int
    huffman_bits: int
    pointer_bits: int

    @property
    def density(self) -> float:
        return self.nnz / self.weights


@dataclass(frozen=True)
class CompressionReport:
    layers: tuple[LayerReport, ...]
    accuracy_float: float | None = None
    accuracy_quantized: float | None = None
    accuracy_data: str = ""

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def nnz(self) -> int:
        return sum(layer.nnz for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / self.weights

    def _total(self, field: str) -> int:
        return sum(getattr(layer, field) for layer in self.layers)

    @property
    def compression_ratio(self) -> float:
        return self._total("dense_bits") / self._total("compressed_bits")

    @property
    def compression_ratio_huffman(self) -> float:
        return self._total("dense_bits") / self._total("huffman_bits")

    @property
    def compression_ratio_with_pointers(self) -> float:
        return self._total("dense_bits") / (self._total("compressed_bits")
                                            + self._total("pointer_bits"))

    def to_json(self) -> dict:
        return {
            "accuracy_float": self.accuracy_float,
            "accuracy_quantized": self.accuracy_quantized,
            "accuracy_data": self.accuracy_data,
            "sparsity": round(self.sparsity, 5),
            "compression_ratio": round(self.compression_ratio, 2),
            "compression_ratio_huffman": round(self.compression_ratio_huffman, 2),
            "compression_ratio_with_pointers": round(self.compression_ratio_with_pointers, 2),
            "weights": self.weights, "nonzeros": self.nnz,
            "layers": [{**asdict(layer), "density": round(layer.density, 5)}
                       for layer in self.layers],
        }

    @classmethod
    def from_json(cls, obj: dict) -> CompressionReport:
        fields = set(LayerReport.__dataclass_fields__)
        layers = tuple(LayerReport(**{k: (tuple(v) if k == "shape" else v)
                                      for k, v in layer.items() if k in fields})
                       for layer in obj["layers"])
        return cls(layers, obj.get("accuracy_float"), obj.get("accuracy_quantized"),
                   obj.get("accuracy_data", ""))


def account(network: QuantizedNetwork, *, accuracy_float=None, accuracy_quantized=None,
            accuracy_data: str = "") -> CompressionReport:
    layers = []
    for layer in network.layers:
        csc = encode_csc(layer.codes, (1 << IDX_BITS) - 1)
        entries = len(csc.codes)
        per_entry = layer.code_bits + IDX_BITS
        fixed = (1 << layer.code_bits) * layer.weight_format.bits \
            + layer.out_features * layer.bias_bits
        pointer_width = max(1, math.ceil(math.log2(entries + 1)))
        layers.append(LayerReport(
            name=layer.name, shape=(layer.out_features, layer.in_features),
            weights=layer.codes.size, nnz=layer.nnz, padding=csc.padding,
            code_bits=layer.code_bits, index_bits=IDX_BITS,
            coef_bits=layer.weight_format.bits, bias_bits=layer.bias_bits,
            dense_bits=32 * (layer.codes.size + layer.out_features),
            compressed_bits=entries * per_entry + fixed,
            huffman_bits=huffman_bits(csc.codes) + huffman_bits(csc.zero_runs) + fixed,
            pointer_bits=(layer.in_features + 1) * pointer_width))
    return CompressionReport(tuple(layers), accuracy_float, accuracy_quantized, accuracy_data)


def render(report: CompressionReport, console=None) -> None:
    """Deep Compression's table: per layer weights, density, bits, storage; totals."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    from rich import box

    table = Table(title="Deep Compression accounting (entries incl. padding, codebooks, "
                        "biases; dense = 32-bit)", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("layer", "shape", "weights", "density", "bits w/i", "KiB dense",
                   "KiB comp.", "KiB Huff.", "ratio"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in report.layers:
        table.add_row(layer.name, f"{layer.shape[0]}x{layer.shape[1]}", f"{layer.weights:,}",
                      f"{100 * layer.density:.1f}%", f"{layer.code_bits}/{layer.index_bits}",
                      _kib(layer.dense_bits), _kib(layer.compressed_bits),
                      _kib(layer.huffman_bits),
                      f"{layer.dense_bits / layer.compressed_bits:.1f}x")
    total_dense = sum(layer.dense_bits for layer in report.layers)
    table.add_row("total", "", f"{report.weights:,}", f"{100 * (1 - report.sparsity):.1f}%",
                  "", _kib(total_dense),
                  _kib(sum(layer.compressed_bits for layer in report.layers)),
                  _kib(sum(layer.huffman_bits for layer in report.layers)),
                  f"{report.compression_ratio:.1f}x", style="bold")
    console.print(table)
    pointers = sum(layer.pointer_bits for layer in report.layers)
    console.print(f"compression ratio {report.compression_ratio:.1f}x, with Huffman coding "
                  f"{report.compression_ratio_huffman:.1f}x; column pointers "
                  f"{_kib(pointers)} KiB more ({report.compression_ratio_with_pointers:.1f}x "
                  f"with them)")
    if report.accuracy_float is not None:
        drop = 100 * (report.accuracy_float - report.accuracy_quantized)
        console.print(f"accuracy{' on ' + report.accuracy_data if report.accuracy_data else ''}"
                      f": float {100 * report.accuracy_float:.2f}%, compressed fixed point "
                      f"{100 * report.accuracy_quantized:.2f}% ({drop:.2f} points lost)")


def _kib(bits: int) -> str:
    return f"{bits / 8192:.2f}"
