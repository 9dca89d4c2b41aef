"""Random sparse networks on the generated Verilog: bit-exact outputs, cycles as modelled.

Issue 5's acceptance sweep.  For each N in {1, 2, 4, 8, 16} one engine is generated, big enough
for every case of that N (the field-wise maximum of what each case needs), and compiled once
with Verilator; each case's program image is then loaded over the host bus, as the host does to
change models without a new bitstream.  The cases cover shapes from 1 to 512 features, weight
densities from 1% to 50%, input activation sparsity from 0% to 90%, 2- to 4-bit codebooks,
empty columns and rows, tall PEs at low density (zero runs longer than 15, so padding entries),
and 1- to 3-layer networks.  Half of each engine's cases run with idle cycles on the input
stream and backpressure on the output stream.  ``make test`` runs N = 1 .. 8 (160 cases),
``make test-all`` N = 16 as well (200).

Every case must match the golden model (which reads only the image) bit for bit, the golden
model must agree with the integer network it was compiled from, and every layer's measured
cycle count must equal the cycle model's prediction on the golden model's layer inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sparseforge.compiler.config import EngineConfig
from sparseforge.compiler.configure import derive_config, widest_capacity
from sparseforge.compiler.ir import QuantizedLinear, QuantizedNetwork
from sparseforge.compiler.numerics import FixedFormat
from sparseforge.compiler.program import compile as compile_program
from sparseforge.sim.reference.golden import run_image
from sparseforge.sim.rtl import RtlCase, run_rtl
from sparseforge.sim.runner import available_simulators
from sparseforge.sim.simulate import predict

ACT_BITS = 8
INPUT_FORMAT = FixedFormat(ACT_BITS, 4)

# One engine per N: scan lanes, queue depth and requantizer sharing vary between them so the
# sweep covers the broadcast unit's lane logic, full queues and shared write-back as well.
ENGINES = {
    1: {"scan_lanes": 1, "fifo_depth": 4, "writeback_lanes": 0},
    2: {"scan_lanes": 2, "fifo_depth": 2, "writeback_lanes": 0},
    4: {"scan_lanes": 4, "fifo_depth": 8, "writeback_lanes": 2},
    8: {"scan_lanes": 1, "fifo_depth": 2, "writeback_lanes": 2,      # the iCE40 shape
        "decoded_weights": True, "skip_zeros": True},
    16: {"scan_lanes": 4, "fifo_depth": 8, "writeback_lanes": 4,       # the ECP5 front end
         "column_queue": True, "readout_register": True, "link_registers": True,
         "decoded_weights": True},
}
CASES_PER_ENGINE = 40        # 200 in all
STALLS = {"input_idle": 0.3, "output_stall": 0.3}



@dataclasses.dataclass
class Case:
    """One random network with its inputs and what it is meant to exercise."""
    name: str
    network: QuantizedNetwork
    inputs: np.ndarray


def random_layer(rng, name, out_features, in_features, density, *, input_format, relu,
                 empty_columns=0.0):
    """A random integer layer: codes at ``density`` (plus whole empty columns), a random
    codebook of 2-4 bits, 16-bit biases, and a shift from the formats (4 .. 11)."""
    code_bits = int(rng.integers(2, 5))
    codes = rng.integers(1, 1 << code_bits, (out_features, in_features))
    codes[rng.random((out_features, in_features)) >= density] = 0
    codes[:, rng.random(in_features) < empty_columns] = 0
    if out_features > 4 and rng.random() < 0.3:
        codes[rng.integers(0, out_features)] = 0                       # an empty row
    codebook = rng.integers(-128, 128, 1 << code_bits)
    codebook[0] = 0
    weight_format = FixedFormat(8, int(rng.integers(4, 8)))
    output_format = FixedFormat(ACT_BITS, int(rng.integers(0, 5)))
    return QuantizedLinear(name, codes.astype(np.uint8), codebook,
                           rng.integers(-2000, 2000, out_features), code_bits, input_format,
                           weight_format, output_format, 16, relu)


def random_network(rng, widths, density, *, empty_columns=0.1) -> QuantizedNetwork:
    """Layers ``widths[0] -> widths[1] -> ...``; hidden layers ReLU, the last one maybe."""
    layers, fmt = [], INPUT_FORMAT
    for index in range(len(widths) - 1):
        last = index == len(widths) - 2
        layer = random_layer(rng, f"fc{index}", widths[index + 1], widths[index], density,
                             input_format=fmt, relu=not last or bool(rng.random() < 0.5),
                             empty_columns=empty_columns)
        layers.append(layer)
        fmt = layer.output_format
    return QuantizedNetwork(tuple(layers))


def random_inputs(rng, batch, features, sparsity):
    x = rng.integers(-128, 128, (batch, features))
    x[rng.random((batch, features)) < sparsity] = 0
    return x


def make_cases(pes: int, count: int) -> list[Case]:
    """``count`` seeded cases for an engine of ``pes`` PEs: mostly small, a few tall and
    sparse (zero runs over 15), one or two 512 wide."""
    rng = np.random.default_rng(1000 + pes)
    cases = []
    for index in range(count):
        kind = ("wide" if index in (0, 1) and (index == 0 or pes >= 4)
                else "tall" if index in (2, 3, 4) else "small")
        if kind == "wide":
            # 512 x 512 (or 512 in, fewer out); density scaled so a PE holds ~3k entries.
            density = float(min(0.5, max(0.01, 0.012 * pes)))
            widths = [512, 512] if index == 0 else [512, 64, 10]
            batch = 1
        elif kind == "tall":
            # Many rows per PE at 1-3% density: most zero runs exceed 15.
            density = float(rng.uniform(0.01, 0.03))
            widths = [int(rng.integers(8, 64)), 16 * 16 * pes if pes <= 2 else 32 * pes]
            widths[1] = min(widths[1], 512)
            if rng.random() < 0.5:
                widths.append(int(rng.integers(2, 20)))
            batch = 2
        else:
            layers = int(rng.integers(1, 4))
            widths = [int(rng.integers(1, 97)) for _ in range(layers + 1)]
            density = float(np.exp(rng.uniform(np.log(0.01), np.log(0.5))))
            batch = 2
        network = random_network(rng, widths, density)
        sparsity = float(rng.uniform(0.0, 0.9))
        name = (f"N{pes}-{index:02d}-{kind}-{'x'.join(map(str, widths))}"
                f"-d{density:.2f}-s{sparsity:.2f}")
        cases.append(Case(name, network, random_inputs(rng, batch, widths[0], sparsity)))
    return cases


def shared_config(cases: list[Case], pes: int, **engine) -> EngineConfig:
    """The smallest engine every case fits: each capacity field's maximum over the cases."""
    derived = [derive_config(case.network, pes, scan_lanes=engine["scan_lanes"])
               for case in cases]
    return dataclasses.replace(derived[0], **widest_capacity(derived),
                               **{name: value for name, value in engine.items()
                                  if name != "scan_lanes"})


def check(program, case: Case, result) -> None:
    """Bit-exact outputs, golden model == integer network, cycles == the cycle model."""
    taken = program.taken_inputs(case.inputs)       # no empty first-layer column is sent
    expected = run_image(program.config, program.image, taken)
    np.testing.assert_array_equal(program.network_output(expected),
                                  case.network.forward(case.inputs),
                                  err_msg=f"{case.name}: golden model vs network")
    assert result.mismatches == 0, f"{case.name}: {result.mismatches} outputs differ"
    np.testing.assert_array_equal(result.outputs, expected, err_msg=case.name)
    predicted = np.array([[timing.cycles for timing in row]
                          for row in predict(program, taken)])
    np.testing.assert_array_equal(result.cycles, predicted,
                                  err_msg=f"{case.name}: measured vs modelled cycles")


# The 16-PE engine (the ECP5 front end's registers) is the longest of the sweep, about three
# minutes on the project's two cores: `make test-all` runs it, `make test` keeps to the budget
# (the ECP5 front end's components have their own tests, tests/test_hw_engine.py among them).
@pytest.mark.cocotb
@pytest.mark.parametrize("pes", [pytest.param(n, marks=pytest.mark.slow) if n == 16 else n
                                 for n in sorted(ENGINES)])
def test_random_networks_on_one_engine(pes, tmp_path):
    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    cases = make_cases(pes, CASES_PER_ENGINE)
    config = shared_config(cases, pes, **ENGINES[pes])
    programs = [compile_program(case.network, config=config) for case in cases]
    # Every engine must be one Verilator build: cases loaded over the bus, Verilog unchanged.
    taken = [program.taken_inputs(case.inputs) for case, program in zip(cases, programs)]
    rtl_cases = [RtlCase(case.name, program.image, x, run_image(config, program.image, x))
                 for case, program, x in zip(cases, programs, taken)]
    half = len(cases) // 2
    results = run_rtl(config, rtl_cases[:half], build_dir=tmp_path, seed=pes)
    results += run_rtl(config, rtl_cases[half:], build_dir=tmp_path, seed=pes + 1, **STALLS)
    assert len(list(tmp_path.glob("verilator_*"))) == 1
    for case, program, result in zip(cases, programs, results):
        check(program, case, result)


def test_cases_cover_the_sweep():
    """The generated cases span what the issue asks for (no simulator needed)."""
    all_cases = {pes: make_cases(pes, CASES_PER_ENGINE) for pes in ENGINES}
    flat = [case for cases in all_cases.values() for case in cases]
    assert len(flat) >= 200
    layers = [layer for case in flat for layer in case.network.layers]
    assert max(max(layer.codes.shape) for layer in layers) == 512
    densities = [np.count_nonzero(layer.codes) / layer.codes.size for layer in layers
                 if layer.codes.size >= 256]
    assert min(densities) < 0.02 and max(densities) > 0.4
    sparsity = [np.mean(case.inputs == 0) for case in flat if case.inputs.size >= 64]
    assert min(sparsity) < 0.1 and max(sparsity) > 0.8
    assert {len(case.network.layers) for case in flat} >= {1, 2, 3}
    assert any(not layer.codes.any(axis=0).all() for layer in layers)      # empty columns
    # Zero runs longer than 15 in some PE's column: padding entries in the image.
    padded = 0
    for pes, cases in all_cases.items():
        for case in cases:
            for layer in case.network.layers:
                for k in range(pes):
                    rows = layer.codes[k::pes]
                    for column in rows.T:
                        positions = np.flatnonzero(column)
                        gaps = np.diff(np.concatenate([[-1], positions]))
                        padded += int(np.count_nonzero(gaps > 16))
    assert padded > 100
