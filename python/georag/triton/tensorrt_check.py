"""Whether a TensorRT engine will load in the Triton that is to serve it.

A serialized engine loads only in the TensorRT version that built it ("By default, TensorRT engines are
compatible only with the version of TensorRT used to build them", TensorRT documentation, Advanced
Topics: Version Compatibility; georag does not build with ``BuilderFlag.VERSION_COMPATIBLE``). In any
other, Triton's TensorRT backend fails the model and the server never becomes ready. The build records
its TensorRT version in the engine's sidecar (``"tensorrt"``, `georag.encoder.tensorrt_build`);
`check_engine_tensorrt` compares it with the serving Triton's (given by whoever generates the
repository: ``echo $TRT_VERSION`` in the Triton container) before anything is written. Versions match
on major.minor.patch (the compatibility tables name some as 10.7.0, others as 10.8.0.43).
"""

from __future__ import annotations

import logging

from georag.triton.model_config import RepositoryError

log = logging.getLogger(__name__)

SAME_PARTS = 3
"""Leading version parts that must be equal: major.minor.patch."""


def same_tensorrt(built: str, server: str) -> bool:
    """Whether TensorRT ``built`` and ``server`` are the same release (major.minor.patch)."""
    return _parts(built) == _parts(server)


def check_engine_tensorrt(built: str | None, server: str | None, *, allow_mismatch: bool) -> None:
    """Refuses (RepositoryError naming both versions) an engine whose TensorRT is not the server's, or
    cannot be checked; with ``allow_mismatch`` it only logs a warning."""
    problem = _problem(built, server)
    if problem is None:
        return
    if not allow_mismatch:
        raise RepositoryError(f"{problem} (--allow-tensorrt-mismatch writes the repository anyway)")
    log.warning("%s; writing the repository anyway (allow_tensorrt_mismatch)", problem)


def _problem(built: str | None, server: str | None) -> str | None:
    if built is None:
        return (
            "the engine's sidecar does not say which TensorRT built it, so whether it loads in the server "
            "cannot be checked: rebuild it with `georag encoder export --format tensorrt`"
        )
    if server is None:
        return (
            f"the engine was built with TensorRT {built}; name the TensorRT version of the Triton that "
            "will serve it with --server-tensorrt (`echo $TRT_VERSION` in its container)"
        )
    if not same_tensorrt(built, server):
        return (
            f"the engine was built with TensorRT {built} but the serving Triton has TensorRT {server}: "
            f"it would never load there; rebuild the engine with TensorRT {server}, or serve it from a "
            f"Triton container with TensorRT {built}"
        )
    return None


def _parts(version: str) -> tuple[str, ...]:
    parts = version.strip().lstrip("vV").split(".")
    parts += ["0"] * (SAME_PARTS - len(parts))
    return tuple(str(int(p)) if p.isdigit() else p for p in parts[:SAME_PARTS])
