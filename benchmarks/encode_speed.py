"""How fast the compiler encodes a layer and packs a program image (prints figures; asserts
nothing about time).

    .venv/bin/python benchmarks/encode_speed.py

Cases: 784 x 300 at 8% density on 8 PEs (LeNet-300's first layer), 1024 x 1024 at 9% on 64
PEs, and a whole two-layer program.  Each is timed as the best of a few runs of
``encode_layer`` (EIE encoding, vectorised over nonzeros and PEs), ``pack_image`` (packing
into memory words) and ``compile`` (encode + configure + pack + the decode/golden check).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sparseforge.compiler.encode import decode_layer, encode_layer
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat
from sparseforge.compiler.program import compile as compile_program


def best_of(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def random_codes(rng, out_features, in_features, density, code_bits=4):
    codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
    codes[rng.random(codes.shape) >= density] = 0
    return codes.astype(np.uint8)


def layer(rng, name, out_features, in_features, density, relu):
    codebook = rng.integers(-128, 128, 16)
    codebook[0] = 0
    return QuantizedLinear(name, random_codes(rng, out_features, in_features, density),
                           codebook, rng.integers(-1000, 1000, out_features), 4,
                           FixedFormat(8, 4), FixedFormat(8, 6), FixedFormat(8, 4), 16, relu)


def main() -> None:
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rng = np.random.default_rng(0)
    print(f"{'case':<34}{'nonzeros':>10}{'entries':>10}{'encode':>11}{'decode':>11}")
    for out_features, in_features, density, pes in ((300, 784, 0.08, 8),
                                                   (1024, 1024, 0.09, 64)):
        codes = random_codes(rng, out_features, in_features, density)
        slices = encode_layer(codes, pes)
        assert np.array_equal(decode_layer(slices, out_features), codes)
        encode = best_of(lambda codes=codes, pes=pes: encode_layer(codes, pes))
        decode = best_of(lambda slices=slices, out=out_features: decode_layer(slices, out))
        entries = sum(s.entries for s in slices)
        name = f"{out_features}x{in_features} {density:.0%} N={pes}"
        print(f"{name:<34}{np.count_nonzero(codes):>10,}{entries:>10,}"
              f"{1e3 * encode:>9.1f}ms{1e3 * decode:>9.1f}ms")
    network = QuantizedNetwork((layer(rng, "fc1", 300, 784, 0.08, True),
                                layer(rng, "fc2", 100, 300, 0.09, True),
                                layer(rng, "fc3", 10, 100, 0.26, False)))
    for pes in (8, 64):
        program = compile_program(network, pes=pes)
        full = best_of(lambda pes=pes: compile_program(network, pes=pes), repeats=3)
        bare = best_of(lambda pes=pes: compile_program(network, pes=pes, verify=False),
                       repeats=3)
        print(f"LeNet-300-100 compile N={pes:<2}: {1e3 * full:.1f} ms "
              f"({1e3 * bare:.1f} ms without the verification step), "
              f"{sum(len(e) for e in program.image.entries):,} entries")


if __name__ == "__main__":
    main()
