"""Graph shapes of models users bring as onnxruntime's quantize_static leaves them: a scalar
constant quantized by QuantizeLinear (onnxruntime quantizes a GELU's 0.5 and 1.0, or any Mul's
scalar, that way)."""

from __future__ import annotations

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler.quantized import UnsupportedModel
from sparseforge.compiler.quantized.reference import compare, reference_outputs
from tests.quantized_models import Builder, random_inputs, save

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _scalar_qdq(b: Builder, value: float) -> str:
    """QuantizeLinear -> DequantizeLinear of a 0-d float constant, as onnxruntime writes it."""
    scale, zp = b.const(np.float32(value / 255)), b.const(np.uint8(0), dtype=np.uint8)
    q = b.node("QuantizeLinear", [b.const(np.float32(value)), scale, zp])
    return b.node("DequantizeLinear", [q, scale, zp])


def test_a_quantized_scalar_constant_is_read_as_a_constant(tmp_path):
    b = Builder(31)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(6, 4), b.const(b.rng.normal(0, 0.3, 6))], transB=1)
    y = b.node("Mul", [y, _scalar_qdq(b, 0.5)])
    y = b.qdq(y, b.scale(0.01, 0.03), 0, np.int8)
    model = b.model("x", y, ["N", 4], qonnx=False)
    path = save(model, tmp_path / "scalar.onnx")
    imported = sf.load_quantized(path)         # was a KeyError: the 0-d constant was lost
    x = random_inputs(model, 200, seed=1)
    integers = imported.predict(x)
    assert len(np.unique(integers)) > 5
    assert compare(imported.network, reference_outputs(path, x), integers) == 0


def test_a_quantized_scalar_beside_a_branch_is_refused_by_name(tmp_path):
    """A GELU as onnxruntime quantizes it: the scalars read, the branch refused by name."""
    b = Builder(32)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    h = b.node("Gemm", [x, b.dq_weights(6, 4), b.const(b.rng.normal(0, 0.3, 6))], transB=1)
    h = b.qdq(h, b.scale(0.01, 0.03), 0, np.int8)
    e = b.node("Erf", [b.node("Div", [h, b.const(np.float32(1.4142135))], name="div")])
    e = b.node("Add", [e, _scalar_qdq(b, 1.0)])
    y = b.node("Mul", [h, e])
    path = save(b.model("x", y, ["N", 4], qonnx=False), tmp_path / "gelu.onnx")
    with pytest.raises(UnsupportedModel, match=r"node 'div' \(Div\): tensor .* feeds.*a GELU "
                                               r"or SiLU activation exports as such a branch"):
        sf.load_quantized(path)


def _mlp(batch):
    b = Builder(33)
    x = b.qdq("x", np.float32(0.02), 0, np.int8)
    y = b.node("Gemm", [x, b.dq_weights(6, 4), b.const(b.rng.normal(0, 0.3, 6))], transB=1)
    y = b.qdq(y, b.scale(0.01, 0.03), 0, np.uint8)
    y = b.node("Gemm", [y, b.dq_weights(3, 6), b.const(b.rng.normal(0, 0.2, 3))], transB=1)
    y = b.qdq(y, b.scale(0.05, 0.2), 0, np.int8)
    return b.model("x", y, [batch, 4], qonnx=False)


def test_a_model_exported_with_a_fixed_batch_runs_on_any_number_of_samples(tmp_path, capsys):
    """torch.onnx.export without dynamic_axes fixes the batch it was traced with (8 here):
    onnxruntime refuses any other, and import --data ended in its traceback."""
    from sparseforge.cli import main

    fixed = save(_mlp(8), tmp_path / "fixed.onnx")
    free = save(_mlp("N"), tmp_path / "free.onnx")
    x = random_inputs(_mlp("N"), 13, seed=2)
    np.testing.assert_array_equal(reference_outputs(fixed, x), reference_outputs(free, x))
    np.savez(tmp_path / "data.npz", x_test=x, y_test=np.arange(13) % 3)
    assert main(["import", fixed, "--data", str(tmp_path / "data.npz"), "-o",
                 str(tmp_path / "m.sfm")]) == 0
    assert "0 of 39 outputs differ" in capsys.readouterr().out
