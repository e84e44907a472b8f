"""A two-node Ray cluster on this machine, on loopback only, and the checks that keep it there (used by
tests/test_scale.py and benchmarks/scale.py)."""

from __future__ import annotations

from pathlib import Path


def listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of this machine (IPv4 and IPv6), from /proc."""
    import ipaddress

    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            addr, port = local.split(":")
            raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, len(addr), 8))  # host-order words
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out.add((str(ip), int(port, 16)))
    return out


def loopback(addr: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(addr).is_loopback


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """A head (``ray start --head``) and a second node (tests/ray_node.py), on 127.0.0.1 only, with a token of
    their own; stopped at the end by killing exactly the processes that carry that token."""

    def __init__(self, cpus_per_node: int = 1):
        import os
        import secrets
        import subprocess
        import sys
        import tempfile

        self.before = listening()
        self.temp = tempfile.mkdtemp(prefix="mr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.token = secrets.token_hex(32)
        self.env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        ray_bin = str(Path(sys.executable).with_name("ray"))
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", f"--num-cpus={cpus_per_node}",
                        "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                        f"--temp-dir={self.temp}"],
                       env=self.env, check=True, capture_output=True, timeout=120)
        subprocess.run([sys.executable, str(Path(__file__).with_name("ray_node.py")), self.address, str(cpus_per_node)],
                       env=self.env, check=True, capture_output=True, timeout=120)

    def mmfer(self, *args) -> str:
        import subprocess
        import sys

        r = subprocess.run([sys.executable, "-m", "mmfer", *map(str, args)], env=self.env, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"mmfer {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
        return r.stdout + r.stderr

    def opened(self) -> set[tuple[str, int]]:
        return listening() - self.before

    def stop(self) -> None:
        import contextlib
        import os
        import shutil
        import signal
        import time

        mark = f"RAY_AUTH_TOKEN={self.token}".encode()

        def ours() -> list[int]:
            pids = []
            for d in Path("/proc").iterdir():
                if d.name.isdigit() and int(d.name) != os.getpid():
                    try:
                        if mark in (d / "environ").read_bytes().split(b"\0"):
                            pids.append(int(d.name))
                    except OSError:
                        continue
            return pids

        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in ours():
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.time() + wait
            while ours() and time.time() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.temp, ignore_errors=True)


