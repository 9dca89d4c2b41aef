"""The digits model end to end: the golden model, executing the compiled image, has exactly the
fixed-point accuracy the compression stage reports (and the same outputs, bit for bit)."""

import numpy as np
import pytest

import sparseforge as sf
from sparseforge.compiler.compress.digits import digits_mlp, load_digits_split
from sparseforge.compiler.compress.training import TrainConfig, train


@pytest.fixture(scope="module")
def compressed():
    """A quickly trained and compressed digits MLP (short schedules: the figures are not the
    point here, their agreement is)."""
    train_set, val_set, test_set = load_digits_split()
    model = digits_mlp(hidden=64, seed=0)
    train(model, train_set, TrainConfig(epochs=15, learning_rate=5e-3, seed=0),
          description="digits", progress=False)
    cm = sf.compress(model, train=(train_set.x, train_set.y), val=(val_set.x, val_set.y),
                     test=(test_set.x, test_set.y), sparsity=0.8, weight_bits=4,
                     prune_steps=2, prune_epochs=2, final_epochs=3, share_epochs=3)
    return cm, test_set


@pytest.mark.parametrize("pes,board", [(8, None), (4, "ulx3s-25f"), (3, None)])
def test_golden_accuracy_equals_the_reported_fixed_point_accuracy(compressed, pes, board):
    cm, test_set = compressed
    program = sf.compile(cm, pes=pes, board=board)
    outputs = sf.reference(program, test_set.x)
    np.testing.assert_array_equal(outputs, cm.predict(test_set.x))
    accuracy = float(np.mean(outputs.argmax(axis=1) == test_set.y))
    assert accuracy == cm.report.accuracy_quantized
    assert accuracy > 0.8


def test_dequantized_logits_follow_the_shared_float_model(compressed):
    cm, test_set = compressed
    program = sf.compile(cm, pes=8)
    logits = program.dequantize(sf.reference(program, test_set.x))
    reference = cm.float_network.forward(test_set.x)
    agreement = np.mean(logits.argmax(axis=1) == reference.argmax(axis=1))
    assert agreement > 0.95
