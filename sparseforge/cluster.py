"""The Ray session that ``sweep`` and ``verify`` run their tasks in.

Local by default: ``ray.init`` starts Ray on this machine with ``workers`` CPUs (default: all of
them), without the dashboard, and shuts it down afterwards (a session of its own, even where a
cluster runs on this machine; its workers on PyTorch's portable kernels, as the command line).
With ``address`` the tasks go to a running cluster (``ray start --head`` on one machine,
``ray start --address=HEAD:6379`` on the others; ``"auto"`` finds one started on this
machine).  A caller that has already called
``ray.init`` (a notebook, a test's ``ray.cluster_utils.Cluster``) keeps its session: it is used
as it is and left running.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager

__all__ = ["RayMissing", "require_ray", "ray_session"]


class RayMissing(ImportError):
    """Ray is not installed: the sweep and verify verbs need the ``sweep`` extra."""


def require_ray():
    try:
        import ray
    except ImportError as error:
        raise RayMissing("sweep and verify run on Ray, which is not installed: "
                         "pip install 'sparseforge[sweep]'") from error
    return ray


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None):
    """Yield the ``ray`` module with a session open (see the module docstring).

    ``workers`` is the number of CPUs a local session offers, i.e. how many tasks run at once;
    a cluster's size is the cluster's, so the two do not go together.
    """
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool)
                                or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, not {workers!r}")
    if workers is not None and address is not None:
        raise ValueError(f"workers={workers} sizes a local Ray session; a cluster at "
                         f"{address!r} has the CPUs its nodes were started with")
    ray = require_ray()
    if address is not None:
        _check_reachable(address)
    if ray.is_initialized():
        yield ray
        return
    # Worker logs would land on the driver's stdout, which --json keeps for one object.
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is not None:
        ray.init(address=address, **quiet)
    else:
        # address "local": a session of its own even where a cluster runs on this machine
        # (ray.init would attach to it, and refuse num_cpus).  Its workers use PyTorch's
        # portable kernels, as the command line does, whatever this process imported: a
        # sweep's figures (and the store that keeps them) are the same from the API and the
        # CLI.
        kernels = os.environ.get("ATEN_CPU_CAPABILITY", "default")
        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1,
                 include_dashboard=False,
                 runtime_env={"env_vars": {"ATEN_CPU_CAPABILITY": kernels}}, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse a ``HOST:PORT`` nobody answers on with a :class:`ConnectionError`: ray.init
    would retry "Failed to connect to GCS" for minutes, deaf to SIGTERM.  ``"auto"``,
    ``"local"`` and ``ray://`` addresses are Ray's to resolve."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "://" in address or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: "
                              f"{error.strerror or error} (is `ray start --head` running "
                              f"there, on that port?)") from None
