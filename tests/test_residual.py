"""Skip connections: residual blocks captured as a chain (compiler/residual.py) compute what
the model computes, from PyTorch modules and ONNX files, and run on the engine bit-exact."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseforge as sf
from sparseforge.compiler.capture import UnsupportedLayerError, capture
from sparseforge.compiler.passes import canonicalize
from sparseforge.compiler.residual import SkipConnectionError


def seeded(module, seed=0):
    torch.manual_seed(seed)
    for parameter in module.parameters():
        nn.init.normal_(parameter, std=0.5)
    for norm in (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    return module.eval()


class Block(nn.Module):
    """``where`` the sum is: "pre" relu(fc2(relu(fc1(x))) + x), "post" x + relu(fc2(...)),
    "single" relu(fc1(x) + x), "norm" relu(bn(fc2(relu(fc1(x)))) + x)."""

    def __init__(self, width=6, hidden=5, where="pre", leaky=False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.norm = nn.BatchNorm1d(width)
        self.where = where
        self.act = nn.LeakyReLU(0.25) if leaky else nn.ReLU()

    def forward(self, x):
        if self.where == "single":
            return F.relu(self.fc2(self.fc1(x).relu()) + x)
        h = self.act(self.fc1(x))
        if self.where == "pre":
            return torch.relu(self.fc2(h) + x)
        if self.where == "norm":
            return F.relu(self.norm(self.fc2(h)) + x)
        return x + F.relu(self.fc2(h))


class PreActivation(nn.Module):
    """BatchNorm -> ReLU -> Linear, twice, summed with the input (a pre-activation block)."""

    def __init__(self, width=6):
        super().__init__()
        self.bn1, self.fc1 = nn.BatchNorm1d(width), nn.Linear(width, width)
        self.bn2, self.fc2 = nn.BatchNorm1d(width), nn.Linear(width, width)

    def forward(self, x):
        return self.fc2(F.relu(self.bn2(self.fc1(F.relu(self.bn1(x)))))) + x


class Single(nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return F.relu(self.fc(x) + x)


class Net(nn.Module):
    """Linear -> [ReLU] -> blocks -> Linear (or the blocks' sum as the output)."""

    def __init__(self, blocks, relu_first=True, head=True):
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.relu_first = relu_first
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(6, 3) if head else None

    def forward(self, x):
        h = self.stem(x)
        if self.relu_first:
            h = torch.relu(h)
        h = self.blocks(h)
        return self.head(h) if self.head is not None else h


def inputs(count=64, features=4, seed=1):
    return np.random.default_rng(seed).standard_normal((count, features)).astype(np.float32)


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.tensor(x)).double().numpy()


CASES = {
    "pre": lambda: Net([Block(where="pre")]),
    "post": lambda: Net([Block(where="post")]),
    "post, post (consecutive sums)": lambda: Net([Block(where="post"), Block(where="post")]),
    "post as the output": lambda: Net([Block(where="post")], head=False),
    "single Linear": lambda: Net([Single()]),
    "BatchNorm before the sum": lambda: Net([Block(where="norm")]),
    "source can be negative": lambda: Net([Block(where="pre")], relu_first=False),
    "negative source, post": lambda: Net([Block(where="post")], relu_first=False),
    "LeakyReLU, nonnegative source": lambda: Net([Block(where="pre", leaky=True)]),
    "three blocks": lambda: Net([Block(where="pre"), Block(where="post"), Block(where="pre")]),
    "projection shortcut": lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), Projection(),
                                                 nn.Linear(4, 3)),
    "pre-activation blocks": lambda: Net([PreActivation(), PreActivation()], relu_first=False),
}


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_a_residual_block_is_a_chain_that_computes_the_same(make):
    model = seeded(make())
    network = canonicalize(capture(model))
    x = inputs()
    np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-4, atol=1e-4)


def test_the_carried_value_costs_one_entry_a_row():
    network = canonicalize(capture(seeded(Net([Block(where="pre")]))))
    # stem 4 -> 6, block's first Linear 6 -> 5 plus 6 carried rows, its last (5 + 6) -> 6.
    assert [(layer.out_features, layer.in_features) for layer in network.layers] == [
        (6, 4), (11, 6), (6, 11), (3, 6)]
    carried = network.layers[1].weight[5:]
    np.testing.assert_array_equal(carried, np.eye(6))
    # A source that can be negative is carried as itself and its negation.
    split = canonicalize(capture(seeded(Net([Block(where="pre")], relu_first=False))))
    assert split.layers[1].out_features == 5 + 12


class ConvBlock(nn.Module):
    """ResNet's basic block: conv -> BatchNorm -> ReLU -> conv -> BatchNorm, summed with the
    input (or its 1 x 1 projection where the stride or the channels change) before ("pre")
    or after ("post") the last ReLU."""

    def __init__(self, channels, out=None, stride=1, where="pre", one_d=False):
        super().__init__()
        out = out or channels
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if one_d else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1, self.bn1 = conv(channels, out, 3, stride, padding=1), norm(out)
        self.conv2, self.bn2 = conv(out, out, 3, padding=1), norm(out)
        self.shortcut = nn.Sequential() if stride == 1 and out == channels else nn.Sequential(
            conv(channels, out, 1, stride, bias=False), norm(out))
        self.where = where

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        if self.where == "pre":
            return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))
        return self.shortcut(x) + F.relu(self.bn2(self.conv2(h)))


class PreActivationBlock(nn.Module):
    """PreActResNet's block: BatchNorm -> ReLU -> conv, twice, summed with the input."""

    def __init__(self, channels, norm=True):
        super().__init__()
        self.bn1, self.conv1 = (nn.BatchNorm2d(channels) if norm else nn.Identity(),
                                nn.Conv2d(channels, channels, 3, padding=1))
        self.bn2, self.conv2 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3,
                                                                   padding=1)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        return self.conv2(F.relu(self.bn2(out))) + x


def resnet(*blocks, one_d=False, pool=True, positions=64, classes=3):
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if one_d else (nn.Conv2d, nn.BatchNorm2d)
    last = blocks[-1].conv2.out_channels
    return nn.Sequential(conv(1, 4, 3, padding=1), norm(4), nn.ReLU(), *blocks,
                         *([nn.AdaptiveAvgPool1d(1) if one_d else nn.AdaptiveAvgPool2d(1)]
                           if pool else []),
                         nn.Flatten(), nn.Linear(last if pool else last * positions, classes))


CONV_CASES = {
    "identity, pre": lambda: resnet(ConvBlock(4)),
    "identity, post": lambda: resnet(ConvBlock(4, where="post")),
    "stride 2 with a projection": lambda: resnet(ConvBlock(4), ConvBlock(4, 8, stride=2)),
    "post then a Linear": lambda: resnet(ConvBlock(4, where="post"), pool=False),
    "post, projection, then a Linear": lambda: resnet(ConvBlock(4, 4, stride=2, where="post"),
                                                      pool=False, positions=16),
    "Conv1d": lambda: resnet(ConvBlock(4, one_d=True), ConvBlock(4, 6, 2, one_d=True),
                             one_d=True),
    "pre-activation blocks": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), PreActivationBlock(4), PreActivationBlock(4),
        nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)),
    "a map's sum, then a Linear block": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), ConvBlock(4, where="post"),
        nn.Flatten(), Single(64), nn.Linear(64, 3)),
    "pre-activation block after a ReLU and a pooling": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        PreActivationBlock(4, norm=False), nn.Flatten(), nn.Linear(64, 3)),
}


@pytest.mark.parametrize("make", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_a_convolutional_residual_block_is_a_chain_that_computes_the_same(make):
    model = seeded(make())
    one_d = isinstance(model[0], nn.Conv1d)
    shape = (1, 16) if one_d else (1, 8, 8)
    network = canonicalize(capture(model, input_shape=shape))
    x = np.random.default_rng(2).standard_normal((16, *shape)).astype(np.float32)
    np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-4, atol=1e-4)


def exported(model, path, shape):
    with warnings.catch_warnings():      # TorchScript export's deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, *shape), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    return path


ONNX_CASES = {
    "pre, then a BatchNorm before the sum": (lambda: Net([Block(where="pre"),
                                                          Block(where="norm")]), (4,)),
    "post, then a BatchNorm before the sum": (lambda: Net([Block(where="post"),
                                                           Block(where="norm")]), (4,)),
    "projection shortcut": (lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), Projection(),
                                                  nn.Linear(4, 3)), (4,)),
    "ResNet blocks, stride 2 with a projection": (
        lambda: resnet(ConvBlock(4), ConvBlock(4, 8, stride=2)), (1, 8, 8)),
    "ResNet block, post": (lambda: resnet(ConvBlock(4, where="post"), pool=False), (1, 8, 8)),
}


def assert_the_export_computes_the_model(make, shape, path, export=exported):
    """The model ``make()`` makes (seeded; inputs ``shape``), exported to ``path`` by
    ``export`` and captured, computes what the model does."""
    model = seeded(make())
    network = canonicalize(capture(export(model, path, shape)))
    x = np.random.default_rng(4).standard_normal((16, *shape)).astype(np.float32)
    np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make, shape", ONNX_CASES.values(), ids=ONNX_CASES.keys())
def test_onnx_residual_blocks(make, shape, tmp_path):
    assert_the_export_computes_the_model(make, shape, tmp_path / "m.onnx")


class WideAndDeep(nn.Module):
    """The deep part's features concatenated with a linear ("wide") view of the input."""

    def __init__(self, wide_first=False):
        super().__init__()
        self.deep = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU())
        self.wide = nn.Linear(6, 3)
        self.head = nn.Linear(8, 3)
        self.wide_first = wide_first

    def forward(self, x):
        parts = [self.wide(x), self.deep(x)] if self.wide_first else [self.deep(x), self.wide(x)]
        return self.head(torch.cat(parts, dim=1))


class DenseLayer(nn.Module):
    """DenseNet's layer: the input and BatchNorm -> ReLU -> conv of it, concatenated."""

    def __init__(self, channels, growth=3):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(channels), nn.Conv2d(channels, growth, 3,
                                                                   padding=1)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], 1)


CONCATENATED = {
    "wide and deep": (lambda: nn.Sequential(nn.Linear(4, 6), WideAndDeep()), (4,)),
    "wide first": (lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), WideAndDeep(True)),
                   (4,)),
    "DenseNet layers": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), DenseLayer(4), DenseLayer(7), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(10, 3)), (1, 8, 8)),
}


@pytest.mark.parametrize("make, shape", CONCATENATED.values(), ids=CONCATENATED.keys())
def test_a_value_concatenated_back_is_carried_as_a_sum_is(make, shape, tmp_path):
    model = seeded(make())
    x = np.random.default_rng(5).standard_normal((12, *shape)).astype(np.float32)
    network = canonicalize(capture(model, input_shape=shape if len(shape) == 3 else None))
    np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-4, atol=1e-4)
    onnx_network = canonicalize(capture(exported(model, tmp_path / "m.onnx", shape)))
    np.testing.assert_allclose(onnx_network.forward(x), torch_out(model, x), rtol=1e-4,
                               atol=1e-4)


class AroundTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        return torch.relu(self.fc2(torch.tanh(self.fc1(x))) + x)


class Projection(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.shortcut = nn.Linear(6, 4), nn.Linear(6, 4)

    def forward(self, x):
        return torch.relu(self.fc(x) + self.shortcut(x))


class Mismatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h) + h + x


class LeakyCarry(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        return self.fc2(F.leaky_relu(self.fc1(x), 0.25)) + x


@pytest.mark.parametrize("block, error, message", [
    (AroundTanh(), SkipConnectionError, r"goes around 'fc1\.?.*tanh|goes around .*function"),
    (Mismatch(), SkipConnectionError, r"overlap"),
    (LeakyCarry(), SkipConnectionError, r"LeakyReLU"),
], ids=["around a Tanh", "nested sums", "negative value through a leak"])
def test_skip_connections_the_chain_cannot_carry_are_refused_by_name(block, error, message):
    model = nn.Sequential(nn.Linear(4, 6), block, nn.Linear(6, 3))
    with pytest.raises(error, match=message):
        capture(seeded(model))


def blobs(features=4, classes=3, count=300, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, features))
    y = rng.integers(0, classes, count)
    return (centres[y] + rng.normal(size=(count, features))).astype(np.float32), y


def trained(model, x, y, epochs=30):
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    data, labels = torch.tensor(x), torch.tensor(y)
    model.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        F.cross_entropy(model(data), labels).backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def compressed_residual():
    x, y = blobs()
    torch.manual_seed(0)
    model = trained(Net([Block(where="pre"), Block(where="post")]), x, y)
    compressed = sf.compress(model, (x[:240], y[:240]), test=(x[240:], y[240:]), sparsity=0.5,
                             prune_steps=1, prune_epochs=2, final_epochs=2, share_epochs=2)
    return model, compressed, x[240:], y[240:]


def test_a_residual_network_compresses_and_keeps_its_accuracy(compressed_residual):
    model, compressed, x, y = compressed_residual
    float_accuracy = float((torch_out(model, x).argmax(1) == y).mean())
    quantized_accuracy = float((compressed.predict(x).argmax(1) == y).mean())
    assert float_accuracy > 0.8
    assert quantized_accuracy >= float_accuracy - 0.1


@pytest.mark.cocotb
def test_a_residual_network_is_bit_exact_on_the_rtl(compressed_residual, tmp_path):
    from tests.rtl_checks import assert_bit_and_cycle_exact

    _, compressed, x, _ = compressed_residual
    program = sf.compile(compressed, pes=4, board="icebreaker")
    assert_bit_and_cycle_exact(program, compressed.network, x[:12], tmp_path / "rtl", "residual")


def test_a_convolutional_residual_network_compiles_and_its_program_computes_the_network():
    from sklearn.datasets import load_digits

    from sparseforge.sim.reference.golden import run_image

    digits = load_digits()
    x = (digits.data[:400] / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target[:400]
    torch.manual_seed(0)
    model = resnet(ConvBlock(4), ConvBlock(4, 8, stride=2), classes=10)
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(20):
        optimiser.zero_grad()
        F.cross_entropy(model(torch.tensor(x)), torch.tensor(y)).backward()
        optimiser.step()
    compressed = sf.compress(model.eval(), (x[:300], y[:300]), test=(x[300:], y[300:]),
                             sparsity=0.5, prune_steps=1, prune_epochs=1, final_epochs=1,
                             share_epochs=1)
    program = sf.compile(compressed, pes=1, board="icebreaker")
    assert program.config.conv
    x_int = program.quantize_input(x[300:320])
    golden = program.network_output(run_image(program.config, program.image, x_int))
    np.testing.assert_array_equal(golden, compressed.network.forward(x_int))


class RandomBlock(nn.Module):
    """A residual block drawn from ``rng``: 1 to 3 Linear layers with ReLU, LeakyReLU (on a
    nonnegative value) or BatchNorm between, an optional BatchNorm before the sum, the sum
    before or after the last activation, through the value itself or a projection."""

    def __init__(self, rng, width, nonnegative):
        super().__init__()
        depth = int(rng.integers(1, 4))
        widths = [width] + [int(rng.integers(2, 9)) for _ in range(depth - 1)] + [width]
        steps = []
        for index in range(depth):
            steps.append(nn.Linear(widths[index], widths[index + 1]))
            if index < depth - 1:
                if rng.random() < 0.3:
                    steps.append(nn.BatchNorm1d(widths[index + 1]))
                steps.append(nn.LeakyReLU(0.25) if nonnegative and rng.random() < 0.3
                             else nn.ReLU())
        if rng.random() < 0.3:
            steps.append(nn.BatchNorm1d(width))
        self.branch = nn.Sequential(*steps)
        self.after = bool(rng.random() < 0.5)           # the sum after a last ReLU
        self.projection = nn.Linear(width, width) if rng.random() < 0.25 else None

    def forward(self, x):
        shortcut = x if self.projection is None else self.projection(x)
        if self.after:
            return torch.relu(self.branch(x)) + shortcut
        return torch.relu(self.branch(x) + shortcut)


@pytest.mark.parametrize("seed", range(40))
def test_random_residual_networks_are_chains_that_compute_the_same(seed):
    rng = np.random.default_rng(seed)
    width = int(rng.integers(2, 8))
    relu_first = bool(rng.random() < 0.6)
    blocks, nonnegative = [], relu_first
    for _ in range(int(rng.integers(1, 4))):
        block = RandomBlock(rng, width, nonnegative)
        blocks.append(block)
        nonnegative = block.projection is None and (not block.after or nonnegative)
    torch.manual_seed(seed)
    model = seeded(nn.Sequential(nn.Linear(4, width), *([nn.ReLU()] if relu_first else []),
                                 *blocks, nn.Linear(width, 3)), seed)
    network = canonicalize(capture(model))
    x = inputs(seed=seed)
    np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(12))
def test_random_convolutional_residual_networks_are_chains_that_compute_the_same(seed):
    rng = np.random.default_rng(100 + seed)
    one_d = bool(rng.random() < 0.3)
    channels, blocks, size = int(rng.integers(2, 5)), [], 8
    for _ in range(int(rng.integers(1, 3))):
        out = int(rng.choice([channels, channels + 2]))
        stride = int(rng.choice([1, 2])) if size > 2 else 1
        blocks.append(ConvBlock(channels, out, stride, where=str(rng.choice(["pre", "post"])),
                                one_d=one_d))
        channels, size = out, (size + 1) // stride if stride == 2 else size
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if one_d else (nn.Conv2d, nn.BatchNorm2d)
    stem = blocks[0].conv1.in_channels
    model = nn.Sequential(conv(1, stem, 3, padding=1), norm(stem), nn.ReLU(), *blocks,
                          nn.Flatten(), nn.LazyLinear(3))
    shape = (1, 8) if one_d else (1, 8, 8)
    model(torch.zeros(2, *shape))                               # sizes the LazyLinear
    model = seeded(model, seed)
    network = canonicalize(capture(model, input_shape=shape))
    x = np.random.default_rng(seed).standard_normal((6, *shape)).astype(np.float32)
    np.testing.assert_allclose(network.forward(x), torch_out(model, x), rtol=1e-4, atol=1e-4)
