"""`georag serve` in a process of its own on 127.0.0.1, for the tests and benchmarks that need the real
command (TLS, raw sockets, a browser, slow clients): started on a free port, waited for until ready, stopped
after."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from triton_server import free_ports

CLI = [sys.executable, "-c", "from georag.cli import main; main()"]


@dataclass
class Served:
    """A running `georag serve`: its port, base URL and process id; its exit status once stopped."""

    port: int
    base: str
    pid: int
    returncode: int | None = None


def get(url: str, context: ssl.SSLContext | None = None) -> int:
    """The HTTP status of GET ``url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


@contextmanager
def serve_process(
    args: list[str],
    log: Path,
    *,
    cli_options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    ready_s: float = 120.0,
) -> Iterator[Served]:
    """`georag [CLI_OPTIONS] serve ARGS --port P` (output appended to ``log``), yielded once /health/ready
    answers 200 (https with ``context``); SIGTERM after, then SIGKILL if it does not end."""
    port = free_ports(1)[0]
    cmd = [*CLI, *cli_options, "serve", *args, "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base = f"{'https' if context is not None else 'http'}://127.0.0.1:{port}"
    try:
        end = time.monotonic() + ready_s
        while get(f"{base}/health/ready", context) != 200:
            if proc.poll() is not None or time.monotonic() > end:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"georag serve did not become ready (exit {proc.poll()}):\n{tail}")
            time.sleep(0.2)
        served = Served(port, base, proc.pid)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    served.returncode = proc.returncode
