"""A real Ray cluster for tests: a head and a second node (two raylets) on 127.0.0.1 only.

Ray binds the machine's primary interface whatever it is told, so the cluster lives in network, PID and
mount namespaces of its own (``unshare -n -p -f --mount-proc``, loopback up): there 127.0.0.1 is the only
address. Test drivers join it with ``nsenter`` into the same namespaces. Ending the namespace's first
process ends every process in it, so teardown kills exactly what the test started, by its id; the first
process is a bounded ``sleep``, so a cluster left behind by a killed test run ends by itself.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PORT = 6391
LIFETIME_S = 900
"""A namespace ends by itself after this long (its first process is a sleep)."""


def skip_unless_possible() -> None:
    """Skips the calling tests when Ray, the namespace tools or the privilege to use them are missing."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install '.[ray]')", allow_module_level=True)
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"no {tool} here: the Ray tests run the cluster in a namespace", allow_module_level=True
            )
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here (needs root)", allow_module_level=True)


class RayCluster:
    """``nodes`` raylets of ``cpus`` CPUs each, in namespaces of their own; `run` starts a driver there."""

    def __init__(self, workdir: Path, *, nodes: int = 2, cpus: int = 1, object_store_mib: int = 100) -> None:
        self.workdir = workdir
        self.address = f"127.0.0.1:{PORT}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),  # this cluster's own, never the user's ~/.ray
            "RAY_USAGE_STATS_ENABLED": "0",
            "TQDM_DISABLE": "1",
        }
        ray = Path(sys.executable).with_name("ray")
        common = f"--num-cpus={cpus} --object-store-memory={object_store_mib * 2**20} --disable-usage-stats"
        ready = workdir / "ray-ready"
        script = " && ".join(
            [
                "ip link set lo up",
                f"{ray} start --head --port={PORT} --include-dashboard=false --temp-dir={workdir / 'ray'} "
                + common,
                *[f"{ray} start --address={self.address} {common}" for _ in range(nodes - 1)],
                f"touch {ready}",
                f"exec sleep {LIFETIME_S}",
            ]
        )
        self.log = workdir / "ray-cluster.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--kill-child=SIGKILL", "-n", "-p", "-f", "--mount-proc", "sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"the Ray cluster did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.init_pid = int(
            Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()[0]
        )

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Runs ``python ARGS`` inside the cluster's namespaces (stdout and stderr captured)."""
        command = ["nsenter", "-t", str(self.init_pid), "-n", "-p", "-m", "--", sys.executable, *args]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )

    def close(self) -> None:
        """Kills the namespace's first process, and with it every process of the cluster."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def tail(result: subprocess.CompletedProcess[str], chars: int = 4000) -> str:
    """A driver's output for an assertion message."""
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-chars:]}\nstderr:\n{result.stderr[-chars:]}"
