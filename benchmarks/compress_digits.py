"""Compression figures on the embedded default (digits MLP): Deep Compression's table, accuracy
before and after (the "after" with the engine's integer arithmetic), and what load-balance-aware
pruning does to the work of 8 PEs.  Prints figures; asserts nothing about time.

    .venv/bin/python benchmarks/compress_digits.py                # the default, then variants
    .venv/bin/python benchmarks/compress_digits.py --seeds 4      # robustness over seeds
    .venv/bin/python benchmarks/compress_digits.py --hidden 64 --quick
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import sparseforge as sf
from sparseforge.compiler.compress.accounting import render
from sparseforge.compiler.compress.digits import HIDDEN, load_digits_split, train_float
from sparseforge.compiler.compress.huffman import entropy_bits
from sparseforge.compiler.encode import encode_layer

VARIANTS = {
    "default (90%, 4-bit codes, 8-bit acts)": {},
    "load-balanced, 8 PEs (ESE)": {"balance_pes": 8},
    "accumulators <= 16 bits (iCE40)": {"max_acc_bits": 16},
    "16-bit acts and codebook values": {"act_bits": 16, "coef_bits": 16},
    "ternary (3 entries, 2-bit codes)": {"weight_bits": 2, "levels": 3},
    "95% sparse": {"sparsity": 0.95},
}


def pe_balance(network, pes: int = 8) -> tuple[float, list[int]]:
    """Load-balance efficiency of a dense input: sum_k E_k / (N max_k E_k), per layer summed,
    and the entries (padding included) of each PE."""
    entries = np.zeros(pes, dtype=np.int64)
    for layer in network.layers:
        entries += [len(s.codes) for s in encode_layer(layer.codes, pes, 15)]
    return float(entries.sum() / (pes * entries.max())), entries.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--seeds", type=int, default=1, help="repeat the default over seeds")
    parser.add_argument("--quick", action="store_true", help="the default only, no variants")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    if not console.is_terminal:       # logs and pipes: wide enough for the summary table
        console = Console(width=140)
    train_set, val_set, test_set = load_digits_split()
    console.print(f"digits: {len(train_set)} train / {len(val_set)} validation / "
                  f"{len(test_set)} test images, MLP 64-{args.hidden}-10 "
                  f"({64 * args.hidden + args.hidden * 10:,} weights); accuracies on test")
    data = {"train": (train_set.x, train_set.y), "val": (val_set.x, val_set.y),
            "test": (test_set.x, test_set.y)}

    summary = Table(title="compression of the digits MLP", title_justify="left")
    for column in ("run", "seed", "float", "shared", "fixed pt", "drop", "sparsity", "ratio",
                   "Huffman", "w/ ptrs", "PE eff.", "s"):
        summary.add_column(column, justify="left" if column == "run" else "right")
    variants = dict(list(VARIANTS.items())[:1]) if args.quick else VARIANTS
    for seed in range(args.seeds):
        start = time.perf_counter()
        model = train_float(hidden=args.hidden, seed=seed)
        train_seconds = time.perf_counter() - start
        for index, (name, options) in enumerate(variants.items()):
            if seed > 0 and index > 0:
                break
            start = time.perf_counter()
            cm = sf.compress(model, **data, seed=seed, **options)
            seconds = time.perf_counter() - start
            report = cm.report
            efficiency, entries = pe_balance(cm.network)
            if seed == 0 and index == 0:
                console.print(f"\n[bold]{name}[/bold] (float training {train_seconds:.1f} s, "
                              f"compression {seconds:.1f} s)")
                render(report, console)
                codes = np.concatenate([layer.codes[layer.codes != 0]
                                        for layer in cm.network.layers])
                console.print(f"codes: entropy {entropy_bits(codes):.2f} bits, Huffman "
                              + ", ".join(f"{layer.name} {layer.huffman_code_length:.2f} / "
                                          f"index {layer.huffman_index_length:.2f}"
                                          for layer in report.layers) + " bits on average")
                console.print(f"8 PEs, dense input: entries per PE {entries}, load-balance "
                              f"efficiency {100 * efficiency:.1f}%")
            summary.add_row(name, str(seed), _pct(report.accuracy_float),
                            _pct(report.accuracy_shared), _pct(report.accuracy_quantized),
                            f"{report.accuracy_drop:.2f}", f"{100 * report.sparsity:.2f}%",
                            f"{report.compression_ratio:.1f}x",
                            f"{report.compression_ratio_huffman:.1f}x",
                            f"{report.compression_ratio_with_pointers:.1f}x",
                            f"{100 * efficiency:.0f}%", f"{seconds:.1f}")
    console.print()
    console.print(summary)
    console.print("drop = float - fixed point, in points; shared = float after pruning and "
                  "weight sharing; PE eff. = sum_k E_k / (8 max_k E_k) for a dense input")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


if __name__ == "__main__":
    main()
