"""Ray as an executor (``--ray ADDRESS|auto|local``): the units of work the stages already cut (prepare's
shards, cv's folds, batch prediction's groups of inputs) as Ray tasks, with the contract of
``mmfer.engine`` (``map(fn, jobs)`` yields ``(index, result)`` as tasks finish). Without ``--ray`` this
module, and Ray, are never imported; it imports nothing of the stages, which pass it their own functions.

On one machine (``local``, or a cluster started on 127.0.0.1) every Ray process must have
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in its environment, else Ray binds the machine's network
address; mmfer sets it for the processes it starts. ``local`` is a private Ray of this process
(``address="local"``): it never joins another cluster (``RAY_ADDRESS``, one recorded in Ray's temp folder)
and keeps its files in a temporary folder of its own. See README "Running on a cluster".
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mmfer.errors import MmferError

INSTALL_HINT = "--ray needs Ray: pip install 'mmfer[cluster]' (or pip install 'ray>=2.60,<3')"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _on_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return address == "local" or host.startswith("127.") or host == "localhost"


def connect(address: str):
    """The ``ray`` module, connected: ``local`` starts a private one-machine Ray on loopback; ``auto`` joins
    the cluster this machine is part of; ``host:port`` joins that cluster's head."""
    if _on_loopback(address):
        os.environ.update(LOOPBACK_ENV)
    try:
        import ray
    except ImportError:
        raise MmferError(INSTALL_HINT) from None
    if ray.is_initialized():
        return ray
    kwargs = {"log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            os.environ.pop("RAY_ADDRESS", None)  # never join or wait for another cluster
            temp = tempfile.mkdtemp(prefix="mmfer-ray-", dir="/tmp")  # short: Ray's socket paths fit 107 bytes
            ray.init(address="local", include_dashboard=False, _temp_dir=temp,
                     runtime_env={"env_vars": dict(LOOPBACK_ENV)}, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise MmferError(f"--ray {address}: cannot connect ({str(err).splitlines()[0][:160]}); start Ray first "
                         "(ray start --head on one node, ray start --address HEAD:PORT on the others) or use "
                         "--ray local") from None
    return ray


class RayExecutor:
    """Units of work as Ray tasks. ``transfer``: the workers do not see this machine's storage, so a unit
    sends its output back instead of writing it (prepare's ``--ray-transfer``)."""

    name = "Ray"

    def __init__(self, address: str, transfer: bool = False, retries: int = 1):
        self.address = address
        self.shared_storage = not transfer
        self.retries = retries
        self._ray = None

    @property
    def ray(self):
        if self._ray is None:
            self._ray = connect(self.address)
        return self._ray

    def has_gpus(self) -> bool:
        return self.ray.cluster_resources().get("GPU", 0) > 0

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable, jobs: Sequence[tuple], cpus: int = 1, gpus: int = 0) -> Iterator[tuple[int, Any]]:
        """Every job as a task of ``cpus`` CPUs and ``gpus`` GPUs (only when the cluster has some); results as
        they finish. Large arguments shared by every job should be put in the object store by the caller."""
        ray = self.ray
        gpus = gpus if gpus and self.has_gpus() else 0
        remote = ray.remote(fn).options(num_cpus=cpus, num_gpus=gpus, max_retries=self.retries)
        pending = {remote.remote(*args): i for i, args in enumerate(jobs)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            yield i, ray.get(done[0])

