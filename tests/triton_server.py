"""Runs a real tritonserver (the binary bundled in nvidia-pytriton) on free local ports, for tests.

The server runs from a separate Python environment that has ``nvidia-pytriton`` and ``numpy<2`` (the
Python backend's stub embeds that interpreter to run ``model.py`` files). It is found, in order, from:

1. ``GEORAG_TRITON_PYTHON``: the path of that environment's ``python``;
2. ``../triton-venv/bin/python`` next to the repository (what CI creates);
3. the running interpreter, when it can import ``pytriton``.

Create it with::

    python3 -m venv ../triton-venv
    ../triton-venv/bin/pip install "numpy<2" nvidia-pytriton==0.7.0

`triton_unavailable_reason` says why tests must skip (``requires``: modules the models import, checked in
the server environment); `run_triton_server` starts a server over a temporary copy of a model repository
(tests/triton_models, or any other one) and stops it (and the Python backend stubs it started) on exit.

georag's own Python-backend models (`georag triton repo`) import georag, onnxruntime and Pillow in the
server environment; install them there too::

    ../triton-venv/bin/pip install "numpy<2" "pyarrow<24" onnxruntime pillow ./  # from the checkout
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = Path(__file__).resolve().parent / "triton_models"
"""The test model repository (tests/triton_models)."""
PYTHON_ENV_VAR = "GEORAG_TRITON_PYTHON"
STARTUP_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 40
PORT_ATTEMPTS = 3

# Run by the server environment's python: where pytriton keeps the server, and what the stub must link.
_PROBE = """
import json, sys, sysconfig
from pathlib import Path
import numpy, pytriton
root = Path(pytriton.__file__).parent
print(json.dumps({
    "pytriton": str(root),
    "libs": str(root.parent / "nvidia_pytriton.libs"),
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
    "numpy": numpy.__version__,
}))
"""


@dataclass(frozen=True)
class TritonEnv:
    """A Python environment with nvidia-pytriton: the server binary, backend, stub and libraries."""

    python: Path
    """The environment's interpreter."""
    server_dir: Path
    """``pytriton/tritonserver``: bin/tritonserver, backends/python, caches, python_backend_stubs."""
    libs_dir: Path
    """``nvidia_pytriton.libs``: the server's bundled shared libraries."""
    libdir: Path
    """The interpreter's LIBDIR (its libpython, which the stub must load rather than the system one)."""
    version: str
    """``MAJOR.MINOR`` of the interpreter, choosing the stub."""

    @property
    def stub(self) -> Path:
        """The Python backend stub built for this interpreter version."""
        return self.server_dir / "python_backend_stubs" / self.version / "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonServer:
    """A running server: its ports and log."""

    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    seconds_to_ready: float
    """Wall time from launch to ready."""

    def url(self, model: str, protocol: str = "grpc", family: str = "qwen2-vl") -> str:
        """The ``triton://`` URL of ``model`` on this server for ``protocol``."""
        port = self.grpc_port if protocol == "grpc" else self.http_port
        return f"triton://127.0.0.1:{port}/{model}?family={family}&protocol={protocol}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log."""
        return _tail(self.log_path, lines)


def _candidates() -> list[Path]:
    configured = os.environ.get(PYTHON_ENV_VAR)
    if configured:
        return [Path(configured)]
    found = [REPO.parent / "triton-venv" / "bin" / "python"]
    if importlib.util.find_spec("pytriton") is not None:
        found.append(Path(sys.executable))
    return found


@functools.cache
def find_triton_env() -> TritonEnv | str:
    """The server environment, or a sentence saying why none is usable."""
    reasons = []
    for python in _candidates():
        if not python.exists():
            reasons.append(f"{python} does not exist")
            continue
        try:
            probe = subprocess.run(
                [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{python} cannot run: {exc}")
            continue
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            reasons.append(f"{python} cannot import pytriton and numpy ({last})")
            continue
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        if int(info["numpy"].split(".")[0]) >= 2:
            reasons.append(f"{python} has numpy {info['numpy']}; the pytriton 0.7 stub needs numpy<2")
            continue
        env = TritonEnv(
            python=python,
            server_dir=Path(info["pytriton"]) / "tritonserver",
            libs_dir=Path(info["libs"]),
            libdir=Path(info["libdir"]),
            version=info["version"],
        )
        if not (env.server_dir / "bin" / "tritonserver").exists() or not env.stub.exists():
            reasons.append(
                f"{python}: pytriton has no tritonserver binary or no stub for Python {env.version}"
            )
            continue
        return env
    hint = 'python3 -m venv ../triton-venv && ../triton-venv/bin/pip install "numpy<2" nvidia-pytriton==0.7.0'
    return f"no Triton server environment ({'; '.join(reasons)}); create one: {hint}, or set {PYTHON_ENV_VAR}"


def triton_unavailable_reason(requires: tuple[str, ...] = ()) -> str | None:
    """Why a real Triton server cannot run here, or None when it can.

    ``requires``: modules the repository's Python models import; each must import in the server
    environment (not just be present: a georag built for another numpy, say, fails here).
    """
    found = find_triton_env()
    if isinstance(found, str):
        return found
    return _missing_modules(found.python, tuple(requires)) if requires else None


@functools.cache
def _missing_modules(python: Path, modules: tuple[str, ...]) -> str | None:
    probe = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    try:
        run = subprocess.run(
            [str(python), "-c", probe, *modules], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} cannot run: {exc}"
    if run.returncode == 0:
        return None
    last = (run.stderr.strip().splitlines() or ["no output"])[-1]
    hint = f'{python.parent / "pip"} install "numpy<2" "pyarrow<24" onnxruntime pillow ./ (from the checkout)'
    return f"the Triton server environment cannot import {', '.join(modules)} ({last}); install them: {hint}"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (the OS picks them)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _server_environment(env: TritonEnv) -> dict[str, str]:
    variables = dict(os.environ)
    # The stub links libpython by soname; without LIBDIR first it may load the system's libpython instead.
    paths = [str(env.libdir), str(env.libs_dir)]
    if variables.get("LD_LIBRARY_PATH"):
        paths.append(variables["LD_LIBRARY_PATH"])
    variables["LD_LIBRARY_PATH"] = ":".join(paths)
    # The embedded interpreter finds its environment (site-packages) from the `python3` first on PATH.
    variables["PATH"] = f"{env.python.parent}:{variables.get('PATH', '')}"
    variables.pop("PYTHONPATH", None)
    variables.pop("PYTHONHOME", None)
    return variables


def _remove_shm(prefix: str) -> None:
    """Removes the shared-memory regions a server left behind (it does when stopped with requests open)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return
    for region in shm.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            region.unlink()


def _ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1.0) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # tritonserver's graceful shutdown
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop within %.0f s; killing it", grace_s)
    # The server ran in its own session: this reaches its Python backend stubs too, and nothing else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5.0)


def _launch(
    env: TritonEnv,
    root: Path,
    models: Path,
    backends: Path,
    log_path: Path,
    startup_timeout_s: float,
    log_verbose: int,
    shm_prefix: str,
    extra_args: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], TritonServer]:
    """Starts the server and waits until it is ready; a port taken meanwhile by someone else is retried."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        http_port, grpc_port, metrics_port = free_ports(3)
        command = [
            str(env.server_dir / "bin" / "tritonserver"),
            f"--model-repository={models}",
            f"--backend-directory={backends}",
            f"--cache-directory={env.server_dir / 'caches'}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}",
            "--allow-metrics=false",
            # Our own prefix for the Python backend's shared-memory regions, so leftovers can be removed.
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            "--exit-timeout-secs=2",  # a stalled HTTP request is not cancelled; do not wait long for it
            f"--log-verbose={log_verbose}",
            *extra_args,
        ]
        start = time.monotonic()
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_server_environment(env),
                cwd=root,
                start_new_session=True,
            )
        try:
            while not _ready(http_port):
                if process.poll() is not None:
                    tail = _tail(log_path, LOG_TAIL_LINES)
                    if "address already in use" in tail.lower() and attempt < PORT_ATTEMPTS:
                        break
                    raise RuntimeError(
                        f"tritonserver exited with {process.returncode} before it was ready; "
                        f"log tail:\n{tail}"
                    )
                if time.monotonic() - start > startup_timeout_s:
                    raise RuntimeError(
                        f"tritonserver not ready after {startup_timeout_s:.0f} s; "
                        f"log tail:\n{_tail(log_path, LOG_TAIL_LINES)}"
                    )
                time.sleep(0.1)
            else:
                server = TritonServer(
                    http_port=http_port,
                    grpc_port=grpc_port,
                    metrics_port=metrics_port,
                    log_path=log_path,
                    seconds_to_ready=time.monotonic() - start,
                )
                log.info(
                    "tritonserver ready in %.1f s (grpc %d, http %d)",
                    server.seconds_to_ready,
                    grpc_port,
                    http_port,
                )
                return process, server
        except BaseException:
            _stop(process)
            raise
        log.info("a port was taken before tritonserver bound it; retrying with others")
        _stop(process)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_triton_server(
    model_repository: Path = MODEL_REPOSITORY,
    *,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    log_verbose: int = 0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[TritonServer]:
    """Starts tritonserver on 127.0.0.1 over a temporary copy of ``model_repository``; stops it on exit.

    ``extra_args``: more tritonserver options (e.g. ``--model-control-mode=explicit``).

    Raises RuntimeError (with the log tail) if the server exits or is not ready within ``startup_timeout_s``.
    """
    found = find_triton_env()
    if isinstance(found, str):
        raise RuntimeError(found)
    env = found
    with tempfile.TemporaryDirectory(prefix="georag-triton-") as tmp:
        root = Path(tmp)
        models = root / "models"
        shutil.copytree(model_repository, models, ignore=shutil.ignore_patterns("__pycache__"))
        # The backend directory must hold the stub for this Python version next to libtriton_python.so.
        backends = root / "backends"
        shutil.copytree(env.server_dir / "backends", backends, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(env.stub, backends / "python" / "triton_python_backend_stub")
        log_path = root / "tritonserver.log"
        shm_prefix = f"georag-test-{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        try:
            process, server = _launch(
                env, root, models, backends, log_path, startup_timeout_s, log_verbose, shm_prefix, extra_args
            )
            try:
                yield server
            finally:
                _stop(process)
        finally:
            _remove_shm(shm_prefix)
