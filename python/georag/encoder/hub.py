"""Before a hub id is loaded: from the local Hugging Face cache, or fail fast when the hub is out of reach.

Without this, a machine with no network spends about half a minute in transformers' retries before an
error that does not say what to do. The check costs one TCP connect (3 s at most) and only when the model
is not cached already.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from georag.errors import ModelLoadError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def offline_hint(repo_id: str) -> str:
    """What to do when ``repo_id`` cannot be fetched here."""
    return (
        f"download it where there is a network (`hf download {repo_id} --local-dir DIR`) and pass that "
        "folder as the model, or copy a populated Hugging Face cache (HF_HOME) here"
    )


def cached_config(repo_id: str) -> Path | None:
    """``repo_id``'s config.json in the local Hugging Face cache (HF_HOME / HF_HUB_CACHE), else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def is_cached(repo_id: str) -> bool:
    """Whether ``repo_id``'s config.json is in the local Hugging Face cache."""
    return cached_config(repo_id) is not None


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def check_hub_reachable(repo_id: str, timeout_s: float = 3.0) -> None:
    """Returns when ``repo_id`` can be loaded: it is cached, or the hub answers a TCP connect (or a proxy is
    configured, which this check cannot see through). ModelLoadError saying what to do otherwise."""
    if is_cached(repo_id):
        return
    if _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE"):
        raise ModelLoadError(
            f"{repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: {offline_hint(repo_id)}"
        )
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    url = urlsplit(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ModelLoadError(
            f"cannot reach the Hugging Face hub at {endpoint} to fetch {repo_id!r} ({exc}): "
            f"{offline_hint(repo_id)}; or set HF_ENDPOINT to a mirror you can reach"
        ) from exc
