"""Brevitas-trained MLPs (W4A4, W2A2, W1A2) exported to QONNX and to ONNX QDQ, imported: the
imported integer network's outputs equal the reference executor's on every test image, and
its accuracy is Brevitas' own.  (The acceptance run, longer training and the engine under
cocotb: benchmarks/import_brevitas.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler.compress.digits import load_digits_split
from sparseforge.compiler.quantized.reference import compare, reference_outputs

pytest.importorskip("brevitas")
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]

MODELS = [(4, 4), (2, 2), (1, 2)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tests.brevitas_models import export, train_mlp

    folder = tmp_path_factory.mktemp("brevitas")
    models = {}
    for weight_bits, act_bits in MODELS:
        trained = train_mlp(weight_bits, act_bits, hidden=32, epochs=2,
                            sparsity=0.5 if weight_bits > 1 else 0.0)
        models[weight_bits, act_bits] = trained, export(trained, folder)
    return models


@pytest.mark.parametrize("kind", ["qonnx", "qdq"])
@pytest.mark.parametrize("bits", MODELS, ids=[f"W{w}A{a}" for w, a in MODELS])
def test_brevitas_models_import_exactly(exported, bits, kind):
    trained, paths = exported[bits]
    _, _, test = load_digits_split()
    imported = sf.load_quantized(paths[kind])
    integers = imported.predict(test.x)
    reference = reference_outputs(paths[kind], test.x)
    assert compare(imported.network, reference, integers) == 0
    # Brevitas' own evaluation, in PyTorch, gives the same outputs and accuracy.
    np.testing.assert_array_equal(reference, trained.logits.astype(np.float32))
    assert np.mean(integers.argmax(axis=1) == test.y) == trained.accuracy
    layers = imported.provenance["import"]["layers"]
    assert [layer["weight_bits"] for layer in layers] == [bits[0]] * 2
    assert layers[0]["output_range"] == [0, (1 << bits[1]) - 1]
    if bits[0] > 1:
        assert all(layer["sparsity"] > 0.2 for layer in layers)     # pruned while trained


@pytest.mark.parametrize("kind", ["qonnx", "qdq"])
def test_a_brevitas_model_without_biases_imports_exactly(tmp_path, kind):
    # Its layers export as Quant -> Transpose -> MatMul: the transposed weight is folded.
    from tests.brevitas_models import export, train_mlp

    trained = train_mlp(4, 4, hidden=16, epochs=1, bias=False)
    path = export(trained, tmp_path)[kind]
    import onnx

    assert "Transpose" in {node.op_type for node in onnx.load(path).graph.node}
    _, _, test = load_digits_split()
    imported = sf.load_quantized(path)
    assert compare(imported.network, reference_outputs(path, test.x),
                   imported.predict(test.x)) == 0
