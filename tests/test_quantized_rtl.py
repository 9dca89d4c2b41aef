"""An imported model with per-channel scales on the generated Verilog under cocotb: every output
equals the golden model (and, dequantized, the model's reference executor), every layer's
cycle count equals the cycle model's.  The engine is the iCE40 shape the compiler picks for
the iCEBreaker (shared requantizers, a register in front of them, codebook values in the entry
memories), requantizers shared by two PEs, its image loaded over the host bus."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler.quantized.reference import compare, reference_outputs
from sparseforge.sim.reference.golden import run_image
from sparseforge.sim.rtl import RtlCase, run_rtl
from sparseforge.sim.runner import available_simulators
from sparseforge.sim.simulate import predict
from tests.quantized_models import qonnx_gemm_matmul, random_inputs, save

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.cocotb
def test_a_per_channel_model_is_bit_exact_on_the_rtl(tmp_path):
    if "verilator" not in available_simulators():
        pytest.skip("verilator is not installed")
    model = qonnx_gemm_matmul()
    path = save(model, tmp_path / "model.onnx")
    imported = sf.load_quantized(path)
    chosen = sf.compile(imported, pes=4, board="icebreaker").config
    assert chosen.multiplier_bits > 0 and chosen.readout_register and chosen.decoded_weights
    # Requantizers shared by two PEs each, as on the 8-PE iCEBreaker engine.
    program = sf.compile(imported, config=dataclasses.replace(chosen, writeback_lanes=2))
    x = random_inputs(model, 40, seed=3)
    x_int = program.quantize_input(x)
    golden = run_image(program.config, program.image, x_int)      # in the engine's order
    np.testing.assert_array_equal(program.network_output(golden), sf.reference(program, x))
    [result] = run_rtl(program.config, [RtlCase("per-channel", program.image, x_int, golden)],
                       build_dir=tmp_path / "rtl", input_idle=0.2, output_stall=0.2)
    assert result.mismatches == 0
    np.testing.assert_array_equal(result.outputs, golden)
    assert compare(imported.network, reference_outputs(path, x),
                   program.network_output(result.outputs)) == 0
    predicted = np.array([[timing.cycles for timing in row] for row in predict(program, x_int)])
    np.testing.assert_array_equal(result.cycles, predicted)
