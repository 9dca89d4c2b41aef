"""A sweep on a two-node Ray cluster, both nodes on this machine (``ray.cluster_utils``).

The sweep connects by address, as ``sparseforge sweep --address`` does, and its tasks must
land on both nodes.
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from sparseforge.sweeps import sweep  # noqa: E402

FAST = {"prune_steps": 2, "prune_epochs": 2, "final_epochs": 4, "share_epochs": 4}


@pytest.fixture
def two_nodes():
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def test_sweep_runs_on_both_nodes_of_a_cluster(two_nodes, tmp_path):
    from sparseforge.compiler.compress.digits import digits_mlp, load_digits_split
    from sparseforge.compiler.compress.training import TrainConfig, train

    model = digits_mlp(32, seed=1)
    train(model, load_digits_split()[0], TrainConfig(epochs=5, seed=1))
    result = sweep(model, pes=[2, 4], sparsity=[0.8, 0.9], board=["ulx3s-85f"], config=FAST,
                   cycle_inputs=40, address=two_nodes.address, out=tmp_path)
    assert not ray.is_initialized()            # the sweep's own session, closed again
    assert [p["status"] for p in result.points] == ["ok"] * 4
    nodes = {p["worker"]["node"] for p in result.points}
    cluster_nodes = {node.node_id for node in two_nodes.list_all_nodes()}
    assert nodes == cluster_nodes and len(nodes) == 2
