"""Start a Ray worker node on this machine, on loopback, as ``ray start --address ADDRESS`` does, and exit
(its processes run on, as after ``ray start``).

Ray 2.60 keeps every socket on 127.0.0.1 only when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is in the
environment of each of its processes, and with that setting ``ray start --address`` refuses to start a
worker node ("multi-node clusters are not supported"). This script skips only that refusal: the node is
built by the same ``ray._private.node.Node(..., head=False)`` call that ``ray start`` makes.

    python tests/ray_node.py HEAD_ADDRESS NUM_CPUS
"""

from __future__ import annotations

import sys


def main(address: str, num_cpus: int) -> None:
    import ray._private.node
    import ray._private.parameter
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled

    params = ray._private.parameter.RayParams(node_ip_address="127.0.0.1", node_name="127.0.0.1",
                                              num_cpus=num_cpus, gcs_address=address)
    ensure_token_if_auth_enabled(None, create_token_if_missing=False)
    ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False, connect_only=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
