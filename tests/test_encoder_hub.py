"""A hub id loads from the local Hugging Face cache without a network, and fails fast (with what to do) when
it is neither cached nor reachable. Each case runs in a fresh process: huggingface_hub reads its environment
variables at import."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from encoder_fixtures import make_tiny_siglip

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


SCRIPT = """
import io, sys, numpy as np
from PIL import Image
from georag.encoder import load_encoder
from georag.errors import ModelLoadError
try:
    enc = load_encoder(sys.argv[1])
except ModelLoadError as exc:
    print("ERROR", exc)
    raise SystemExit(3)
print("MODEL", enc.model_id)
png = io.BytesIO()
Image.new("RGB", (40, 30), (200, 120, 40)).save(png, format="PNG")
np.save(sys.argv[2], enc.encode([png.getvalue()], ids=["x"]).embeddings)
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: connects are refused


def _fake_cache(hf_home: Path, repo_id: str, model: Path) -> None:
    """The layout huggingface_hub keeps: models--org--name/refs/main -> snapshots/<commit>/<files>."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model, repo / "snapshots" / commit)


def _run(tmp_path: Path, model: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    clean = {k: v for k, v in clean.items() if "proxy" not in k.lower()}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, model, str(tmp_path / "emb.npy")],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out, time.perf_counter() - t0


def test_a_cached_hub_id_loads_offline_and_embeds_like_the_folder(tmp_path: Path, tiny: Path) -> None:
    hf_home = tmp_path / "hf"
    _fake_cache(hf_home, "georag-test/tiny-siglip", tiny)
    out, _ = _run(tmp_path, "georag-test/tiny-siglip", HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "MODEL georag-test/tiny-siglip" in out.stdout
    from_cache = np.load(tmp_path / "emb.npy")
    out, _ = _run(tmp_path, str(tiny))
    assert out.returncode == 0, out.stderr
    np.testing.assert_array_equal(from_cache, np.load(tmp_path / "emb.npy"))


def test_an_uncached_hub_id_without_a_network_fails_fast_with_a_hint(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    out, seconds = _run(tmp_path, "georag-test/absent", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=endpoint)
    assert out.returncode == 3, out.stdout + out.stderr
    assert f"cannot reach the Hugging Face hub at {endpoint}" in out.stdout
    assert "--local-dir DIR" in out.stdout and "pass that folder as the model" in out.stdout
    assert seconds < 20  # the import of torch and transformers dominates; transformers' retries took ~26 s


def test_an_uncached_hub_id_with_hf_hub_offline_says_so(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, "georag-test/absent", HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in out.stdout
