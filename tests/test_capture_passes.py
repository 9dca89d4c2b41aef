"""Passes over the Graph, each tested twice: the interpreter gives the same result before and
after, and the expected structural change happened."""

import numpy as np
import pytest

from sparseforge.compiler.errors import InputError
from sparseforge.compiler.ir import Graph, Network, Op, OpKind
from sparseforge.compiler.passes import (
    PASSES,
    canonicalize,
    drop_final_softmax,
    erase_identities,
    fold_batchnorm,
    fuse_relu,
)

RNG = np.random.default_rng(11)


def linear(name, out_features, in_features, relu=False):
    attrs = {"relu": True} if relu else {}
    return Op(OpKind.LINEAR, name, {"weight": RNG.normal(size=(out_features, in_features)),
                                    "bias": RNG.normal(size=out_features)}, attrs)


def batchnorm(name, features):
    return Op(OpKind.BATCHNORM, name, {"mean": RNG.normal(size=features),
                                       "var": RNG.uniform(0.2, 3.0, size=features),
                                       "weight": RNG.normal(size=features),
                                       "bias": RNG.normal(size=features)}, {"eps": 1e-5})


def op(kind, name):
    return Op(kind, name)


X = RNG.normal(size=(32, 6))


def kinds(graph):
    return [o.kind for o in graph.ops]


def assert_same_function(before, after, *, argmax_only=False):
    if argmax_only:
        np.testing.assert_array_equal(before.run(X).argmax(1), after.run(X).argmax(1))
    else:
        np.testing.assert_allclose(after.run(X), before.run(X), rtol=1e-12, atol=1e-12)


def test_erase_identities():
    graph = Graph((op(OpKind.FLATTEN, "flat"), linear("fc1", 5, 6), op(OpKind.IDENTITY, "drop"),
                   op(OpKind.RELU, "act"), op(OpKind.IDENTITY, "id"), linear("fc2", 3, 5)), 6)
    after = erase_identities(graph)
    assert_same_function(graph, after)
    assert [o.name for o in after.ops] == ["fc1", "act", "fc2"]


def test_fold_batchnorm_into_the_preceding_linear():
    graph = Graph((linear("fc1", 5, 6), batchnorm("bn1", 5), op(OpKind.RELU, "act"),
                   linear("fc2", 4, 5), batchnorm("bn2", 4)), 6)
    after = fold_batchnorm(graph)
    assert_same_function(graph, after)
    assert kinds(after) == [OpKind.LINEAR, OpKind.RELU, OpKind.LINEAR]
    assert [o.name for o in after.ops] == ["fc1", "act", "fc2"]
    assert not np.allclose(after.ops[0].params["weight"], graph.ops[0].params["weight"])


def test_fold_batchnorm_without_a_layer_before_into_the_linear_after_it():
    graph = Graph((linear("fc1", 5, 6), op(OpKind.RELU, "act"), batchnorm("bn", 5),
                   linear("fc", 3, 5)), 6)
    after = fold_batchnorm(graph)
    assert_same_function(graph, after)
    assert OpKind.BATCHNORM not in kinds(after) and after.ops[-1].name == "fc"
    assert not np.allclose(after.ops[-1].params["bias"], graph.ops[-1].params["bias"])


def test_a_batchnorm_at_the_input_becomes_the_first_layers_input_scaling():
    graph = Graph((batchnorm("bn", 6), linear("fc", 3, 6)), 6)
    after = fold_batchnorm(graph)
    assert_same_function(graph, after)
    assert kinds(after) == [OpKind.LINEAR]
    # The weights stay the model's: the host scales the inputs.
    np.testing.assert_array_equal(after.ops[0].params["weight"], graph.ops[1].params["weight"])
    scale, shift = after.ops[0].attrs["input_scaling"]
    assert scale.shape == shift.shape == (6,)


@pytest.mark.parametrize("ops,before,after", [
    ((batchnorm("bn", 6), op(OpKind.RELU, "act"), linear("fc", 3, 6)), "the model's input",
     "ReLU 'act'"),
    ((linear("fc", 5, 6), op(OpKind.RELU, "act"), batchnorm("bn", 5)), "ReLU 'act'",
     "the end of the model"),
])
def test_batchnorm_with_no_layer_on_either_side_is_an_error(ops, before, after):
    # The message names each op's type (a bare module path like '3' says little) and the way
    # out; it is an InputError, the error a user can fix.
    with pytest.raises(InputError, match=f"BatchNorm 'bn' follows {before} and comes before "
                                         f"{after}: sparseforge folds a BatchNorm \\(or a "
                                         f"scale and shift by constants\\) into the "
                                         f"Linear or convolution right before it, or"):
        fold_batchnorm(Graph(ops, 6))


def test_batchnorm_after_a_fused_relu_is_an_error():
    graph = Graph((linear("fc", 5, 6, relu=True), batchnorm("bn", 5)), 6)
    with pytest.raises(ValueError, match="whose ReLU is already fused"):
        fold_batchnorm(graph)


def test_fold_a_batchnorm2d_into_the_convolution_or_the_linear_after_it():
    rng = np.random.default_rng(4)

    def conv(name, out_channels, in_channels, padding):
        return Op(OpKind.CONV, name, {"weight": rng.normal(size=(out_channels, in_channels, 3, 3)),
                                      "bias": rng.normal(size=out_channels)},
                  {"stride": (1, 1), "padding": padding})

    x = rng.normal(size=(4, 2 * 6 * 6))
    for ops in [(batchnorm("bn", 2), conv("c", 3, 2, (0, 0))),
                (conv("c0", 2, 2, (1, 1)), op(OpKind.RELU, "act"), batchnorm("bn", 2),
                 op(OpKind.FLATTEN, "flat"), linear("fc", 3, 72))]:
        graph = erase_identities(Graph(ops, 72, input_shape=(2, 6, 6)))
        after = fold_batchnorm(graph)
        np.testing.assert_allclose(after.run(x), graph.run(x), rtol=1e-10, atol=1e-10)
        assert OpKind.BATCHNORM not in kinds(after)
    # At the input, before a padded convolution, it is the host's scaling of each channel's
    # positions: the padding is the scaled map's, as in the model.
    padded = Graph((batchnorm("bn", 2), conv("c", 3, 2, (1, 1))), 72, input_shape=(2, 6, 6))
    after = fold_batchnorm(padded)
    np.testing.assert_allclose(after.run(x), padded.run(x), rtol=1e-10, atol=1e-10)
    assert after.ops[0].attrs["input_scaling"][0].shape == (72,)
    # After a ReLU, into a padded convolution, it would shift the padding's zeros too.
    inside = Graph((conv("c0", 2, 2, (1, 1)), op(OpKind.RELU, "act"), batchnorm("bn", 2),
                    conv("c", 3, 2, (1, 1))), 72, input_shape=(2, 6, 6))
    with pytest.raises(InputError, match=r"comes before Conv2d 'c' \(padded: its padding would "
                                         r"be shifted too\)"):
        fold_batchnorm(inside)


def test_fuse_relu():
    graph = Graph((linear("fc1", 5, 6), op(OpKind.RELU, "act"), linear("fc2", 3, 5)), 6)
    after = fuse_relu(graph)
    assert_same_function(graph, after)
    assert kinds(after) == [OpKind.LINEAR, OpKind.LINEAR]
    assert after.ops[0].attrs["relu"] is True and not after.ops[1].attrs.get("relu")


def test_relu_first_is_an_error():
    with pytest.raises(InputError, match="ReLU 'act' follows the model's input, not a Linear "):
        fuse_relu(Graph((op(OpKind.RELU, "act"), linear("fc", 3, 6)), 6))


def test_drop_final_softmax_keeps_the_argmax():
    graph = Graph((linear("fc1", 5, 6), op(OpKind.SOFTMAX, "soft")), 6)
    after = drop_final_softmax(graph)
    assert_same_function(graph, after, argmax_only=True)
    assert kinds(after) == [OpKind.LINEAR]


def test_final_softmax_over_another_axis_is_an_error():
    # Over the batch it changes which class wins: dropping it would change the predictions.
    graph = Graph((linear("fc1", 5, 6), Op(OpKind.SOFTMAX, "soft", {}, {"axis": 0})), 6)
    with pytest.raises(ValueError, match=r"Softmax 'soft' normalises over axis 0, not the "
                                         r"classes"):
        drop_final_softmax(graph)
    for axis in (1, -1):
        kept = Graph((graph.ops[0], Op(OpKind.SOFTMAX, "soft", {}, {"axis": axis})), 6)
        assert kinds(drop_final_softmax(kept)) == [OpKind.LINEAR]


def test_softmax_in_the_middle_is_an_error():
    graph = Graph((linear("fc1", 5, 6), op(OpKind.SOFTMAX, "soft"), linear("fc2", 3, 5)), 6)
    with pytest.raises(ValueError, match="Softmax 'soft' is not the last layer"):
        drop_final_softmax(graph)


def test_canonicalize_runs_every_pass_and_builds_a_network():
    graph = Graph((op(OpKind.FLATTEN, "flat"), linear("fc1", 5, 6), batchnorm("bn", 5),
                   op(OpKind.RELU, "act"), op(OpKind.IDENTITY, "drop"), linear("fc2", 3, 5),
                   op(OpKind.SOFTMAX, "soft")), 6, "test")
    network = canonicalize(graph)
    assert isinstance(network, Network) and len(PASSES) == 9
    assert [(layer.name, layer.relu) for layer in network.layers] == [("fc1", True),
                                                                      ("fc2", False)]
    np.testing.assert_array_equal(network.forward(X).argmax(1), graph.run(X).argmax(1))
    np.testing.assert_allclose(network.forward(X),
                               Graph(graph.ops[:-1], 6).run(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tail", [(), (op(OpKind.SIGMOID, "squash"),),
                                  (batchnorm("bn", 1), op(OpKind.SIGMOID, "squash"))],
                         ids=["logit", "sigmoid", "batchnorm, sigmoid"])
def test_a_one_output_binary_classifier_runs_as_two_classes(tail):
    graph = Graph((linear("fc1", 5, 6), op(OpKind.RELU, "act"), linear("fc2", 1, 5)) + tail, 6)
    network = canonicalize(graph)
    assert network.output_size == 2
    outputs = network.forward(X)
    logit = canonicalize(Graph(graph.ops[:3] + tuple(o for o in tail
                                                     if o.kind is OpKind.BATCHNORM), 6))
    # (0, logit): argmax is 1 exactly where the logit is above zero (the sigmoid above 1/2).
    np.testing.assert_array_equal(outputs[:, 0], 0)
    assert np.array_equal(outputs.argmax(1), (outputs[:, 1] > 0).astype(int))
    if not tail:
        np.testing.assert_allclose(outputs[:, 1], graph.run(X)[:, 0], rtol=1e-12)
    assert logit.output_size == 2 and np.count_nonzero(network.layers[-1].weight[0]) == 0
    # A last layer of more outputs is left as it is.
    wider = Graph((linear("fc1", 5, 6), op(OpKind.RELU, "act"), linear("fc2", 3, 5)), 6)
    assert canonicalize(wider).output_size == 3
