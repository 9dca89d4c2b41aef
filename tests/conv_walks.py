"""Walks of random convolutional networks, and engine configurations for them, for the unit
tests of the conv-mode hardware (seeded)."""

from __future__ import annotations

import numpy as np

from sparseforge.compiler import isa
from sparseforge.compiler.configure import derive_config
from sparseforge.compiler.lowering import lower
from tests.conv_models import random_conv_network


def walks_and_configs(seed: int, count: int):
    """``count`` (config, walk) pairs from random networks and PE counts."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        network = random_conv_network(rng)
        pes = int(rng.choice([1, 2, 4, 8]))
        lanes = int(rng.choice([g for g in (1, 2, 4, 8) if pes % g == 0]))
        config = derive_config(network, pes, scan_lanes=lanes)
        for walk in lower(network, pes, lanes).walks:
            out.append((config, walk))
    return out[:count]


def geometry_value(config, walk) -> dict:
    """A walk as the geometry word's fields (addresses modulo their width)."""
    wrap = (1 << config.group_address_bits) - 1
    layout = isa.geometry_layout(config)
    return {name: getattr(walk, name) & (wrap if field.width == config.group_address_bits
                                         and name != "out_base" else (1 << field.width) - 1)
            for name, field in layout}
