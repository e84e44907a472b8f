"""``python -m mmfer.training.launch ARGS``: torchrun, with its rendezvous store kept on loopback.

PyTorch's TCPStore listens on every network interface whatever ``--master_addr`` says (pytorch/pytorch
#173909), so a single-machine ``torchrun --master_addr 127.0.0.1`` still opens an unauthenticated port
to the network. This launcher takes the same arguments as torchrun; when the master address is loopback
it binds the store's socket to 127.0.0.1 itself (TCPStore's ``master_listen_fd``) and sets
``GLOO_SOCKET_IFNAME=lo`` for the workers, so nothing a run opens is reachable from outside. Across
machines use torchrun itself.
"""

from __future__ import annotations

import os
import socket
import sys

LOOPBACK = {"127.0.0.1", "localhost"}
_SOCKETS: list[socket.socket] = []  # listening sockets handed to stores: kept open for the run


def loopback_store(original):
    """A TCPStore factory: the server of a loopback store listens on 127.0.0.1 only."""

    def make(host_name, port, world_size=None, is_master=False, *args, **kwargs):
        if is_master and host_name in LOOPBACK and kwargs.get("master_listen_fd") is None and port:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", int(port)))
            sock.listen(128)
            _SOCKETS.append(sock)
            kwargs["master_listen_fd"] = sock.fileno()
        return original(host_name, port, world_size, is_master, *args, **kwargs)

    return make


def main(argv: list[str] | None = None) -> None:
    import torch.distributed as dist
    from torch.distributed.elastic.rendezvous import static_tcp_rendezvous
    from torch.distributed.elastic.utils import distributed as elastic_utils
    from torch.distributed.run import main as torchrun

    argv = list(sys.argv[1:] if argv is None else argv)
    addr = next((a.split("=", 1)[1] for a in argv if a.startswith(("--master_addr=", "--master-addr="))), None)
    for i, a in enumerate(argv[:-1]):
        if a in ("--master_addr", "--master-addr"):
            addr = argv[i + 1]
    if addr is None:  # torchrun's default is the local host: say it explicitly, as loopback
        argv = ["--master_addr", "127.0.0.1", *argv]
        addr = "127.0.0.1"
    if addr in LOOPBACK:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        static_tcp_rendezvous.TCPStore = loopback_store(static_tcp_rendezvous.TCPStore)
        elastic_utils.dist.TCPStore = loopback_store(dist.TCPStore)
    torchrun(argv)


if __name__ == "__main__":
    main()
