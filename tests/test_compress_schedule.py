"""The training schedule follows the training set's size: the full one on small data, each
phase shortened in proportion on large data (an epoch there is many more steps), and the epoch
counts a user gives kept as given."""

import numpy as np
import pytest
import torch.nn as nn

import sparseforge as sf
from sparseforge.compiler.compress.api import FULL_SCHEDULE_SAMPLES, CompressionConfig


@pytest.mark.parametrize("samples,epochs", [
    (1437, (8, 60, 40, 30)),                      # the digits
    (FULL_SCHEDULE_SAMPLES, (8, 60, 40, 30)),
    (14_000, (2, 18, 12, 9)),
    (60_000, (1, 4, 3, 2)),                       # MNIST's training set: 15 epochs in all
    (10_000_000, (1, 2, 2, 2)),                   # never below each phase's floor
])
def test_the_default_schedule_shortens_in_proportion_on_large_data(samples, epochs):
    config = CompressionConfig().schedule_for(samples)
    assert (config.prune_epochs, config.final_epochs, config.share_epochs,
            config.swap_epochs) == epochs


def test_epochs_given_are_kept_on_any_data():
    config = CompressionConfig(prune_epochs=5, final_epochs=0).schedule_for(60_000)
    assert (config.prune_epochs, config.final_epochs, config.share_epochs) == (5, 0, 3)
    with pytest.raises(ValueError, match=r"final_epochs must be an integer >= 0 \(None: "):
        CompressionConfig(final_epochs=-1)


def test_compress_records_the_schedule_it_ran():
    # 40,960 samples: a tenth of the full schedule, so one epoch after the pruning step.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40_960, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    compressed = sf.compress(model, (x, y), sparsity=0.5, prune_steps=1, final_epochs=0,
                             share_epochs=0)
    config = compressed.provenance["config"]
    assert (config["prune_epochs"], config["final_epochs"], config["share_epochs"]) == (1, 0, 0)
    assert compressed.report.accuracy_quantized > 0.9
