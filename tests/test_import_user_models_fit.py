"""An imported model's fit advice: the engine that does not fit the board is told the ways out
that apply to a model quantized where it was trained (its own export), not ``compress``'s
options, which an imported model does not go through."""

from __future__ import annotations

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler.configure import DoesNotFit
from tests.quantized_models import Builder, save

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _wide_qdq(tmp_path):
    """A QDQ MLP 200-256-10 of dense 8-bit weights: more than an iCE40UP5K takes at 2 PEs
    (its block RAMs hold a quarter of the weights)."""
    b = Builder(11)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(256, 200, bits=3), b.const(b.rng.normal(0, 0.3, 256))],
               transB=1)
    y = b.qdq(y, b.scale(2.0, 4.0), 0, np.uint8)     # few steps: a quick fit
    y = b.node("Gemm", [y, b.dq_weights(10, 256, bits=3), b.const(b.rng.normal(0, 0.2, 10))],
               transB=1)
    y = b.qdq(y, b.scale(2.0, 4.0), 0, np.int8)
    return save(b.model("x", y, ["N", 200], qonnx=False), tmp_path / "wide.onnx")


def test_the_fit_advice_of_an_imported_model_names_its_export(tmp_path):
    imported = sf.load_quantized(_wide_qdq(tmp_path))
    with pytest.raises(DoesNotFit) as refused:
        sf.compile(imported, 2, "icebreaker", verify=False)
    advice = str(refused.value).split("ways out:")[1]
    assert "compress" not in advice and "--max-acc-bits" not in advice
    assert "--sparsity" not in advice and "--weight-bits" not in advice
    assert "export" in advice
    assert "BRAM" in str(refused.value)
    assert "a smaller model in the PEs' memories (prune the model further" in advice
    # The same network as a plain QuantizedNetwork (no import record) keeps compress's advice.
    with pytest.raises(DoesNotFit, match="compress with a higher --sparsity"):
        sf.compile(imported.network, 2, "icebreaker", verify=False)


def test_the_fit_advice_of_an_imported_model_after_saving(tmp_path):
    from sparseforge.cli import main

    model = tmp_path / "wide.sfm"
    sf.load_quantized(_wide_qdq(tmp_path)).save(model)
    loaded = sf.load_compressed(model)
    with pytest.raises(DoesNotFit) as refused:
        sf.compile(loaded, 2, "icebreaker", verify=False)
    assert "compress with" not in str(refused.value)
    assert main(["compile", str(model), "--pes", "2", "--board", "icebreaker", "-o",
                 str(tmp_path / "p"), "--no-verilog"]) == 2


def test_a_small_imported_model_short_of_block_rams_is_not_told_to_shrink(tmp_path):
    """A 13-16-3 imported model at 8 PEs on the UP5K needs 32 block RAMs: each PE's memories
    take one each already, and the per-row requantization's scale words the rest; "a smaller
    model in the PEs' memories (prune the model further ...)" sent the user the wrong way."""
    b = Builder(12)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(16, 13, bits=4), b.const(b.rng.normal(0, 0.3, 16))],
               transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.uint8)
    y = b.node("Gemm", [y, b.dq_weights(3, 16, bits=4), b.const(b.rng.normal(0, 0.2, 3))],
               transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    imported = sf.load_quantized(save(b.model("x", y, ["N", 13], qonnx=False),
                                      tmp_path / "small.onnx"))
    with pytest.raises(DoesNotFit) as refused:
        sf.compile(imported, 8, "icebreaker", verify=False)
    message = str(refused.value)
    assert "BRAM" in message and "a smaller model in the PEs' memories" not in message
    assert ("a smaller model will not do: each PE's entries and parameters take a block RAM "
            "each already; the block RAMs go to entries 8, parameters 8, accumulators 8"
            in message)
    assert "scales are the per-row requantization" in message
