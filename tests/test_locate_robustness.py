"""`georag locate` under misuse: changed settings on resume, two runs on one output, failing workers,
odd file names, bad API keys, trickling servers."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.config import Sampling
from georag.errors import ConfigError, GeoRagError, LLMError
from georag.llm.openai_client import OpenAIClient
from georag.llm.retry import RetryPolicy
from georag.locate.output import PredictionWriter
from georag.types import Completion, Prompt


def _args(env: dict[str, object], paths: list[Path], out: Path, *extra: str) -> list[str]:
    return ["locate", *map(str, paths), "--store", str(env["store"]), "--encoder", str(env["tiny"]),
            "--out", str(out), *extra]  # fmt: skip


def test_resuming_with_other_settings_is_refused(locate_env: dict[str, object], tmp_path: Path) -> None:
    photos = locate_env["queries"][:3]  # type: ignore[index]
    assert CliRunner().invoke(main, _args(locate_env, photos, tmp_path / "p.csv")).exit_code == 0
    r = CliRunner().invoke(main, _args(locate_env, photos, tmp_path / "p.csv", "--strategy", "knn-medoid"))
    assert (
        r.exit_code != 0
        and "other settings" in r.output
        and "strategy.name: was 'knn', now 'knn-medoid'" in r.output
    )
    r = CliRunner().invoke(
        main, _args(locate_env, photos, tmp_path / "p.csv", "--strategy", "knn-medoid", "--overwrite")
    )
    assert r.exit_code == 0 and "located 3 photos" in r.output


def test_a_second_writer_on_one_output_is_refused(tmp_path: Path) -> None:
    with (
        PredictionWriter.open(tmp_path / "p.csv", {"strategy": "knn"}),
        pytest.raises(GeoRagError, match="being written by another georag run"),
    ):
        PredictionWriter.open(tmp_path / "p.csv", {"strategy": "knn"})
    PredictionWriter.open(tmp_path / "p.csv", {"strategy": "knn"}).close()  # released


class _Exploding:
    """An LLM client with a bug: its third request raises something that is not an LLMError."""

    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        with self.lock:
            self.calls += 1
            n = self.calls
        if n == 3:
            raise RuntimeError("client bug")
        return Completion(('{"latitude": 1.5, "longitude": 2.5}',) * sampling.n, 0.0)

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_unexpected_worker_error_costs_one_photo(locate_env: dict[str, object]) -> None:
    from georag.config import Config, LLMConfig
    from georag.encoder import load_encoder
    from georag.locate.geolocator import Geolocator
    from georag.store.store import GeoStore

    enc = load_encoder(Path(str(locate_env["tiny"])))
    geo = Geolocator(
        GeoStore.open(Path(str(locate_env["store"]))), enc, _Exploding(), Config(llm=LLMConfig(concurrency=1))
    )
    preds = list(geo.locate(locate_env["queries"][:6]))  # type: ignore[index]
    assert len(preds) == 6
    assert [p.error is not None for p in preds] == [False, False, True, False, False, False]
    assert "internal error: RuntimeError: client bug" in (preds[2].error or "")


def test_a_file_name_that_is_not_utf8_is_written_and_resumed(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    src = Path(str(locate_env["queries"][0]))  # type: ignore[index]
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg"))
    shutil.copyfile(src, odd)
    assert CliRunner().invoke(main, _args(locate_env, [odd], tmp_path / "p.csv")).exit_code == 0
    assert b"caf\xe9.jpg" in (tmp_path / "p.csv").read_bytes()
    r = CliRunner().invoke(main, _args(locate_env, [odd], tmp_path / "p.csv"))
    assert r.exit_code == 0 and "resumed: 1 already done" in r.output


def test_a_malformed_api_key_is_refused_without_quoting_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET123456\r")  # a key file with Windows line endings
    OpenAIClient.from_url("openai://127.0.0.1:1/v1?model=x")  # trailing whitespace is stripped
    for bad in ("sk-SECRET\x01123456", "sk-SECRET\u00e9123456", "sk-SECRET 123456"):
        monkeypatch.setenv("OPENAI_API_KEY", bad)
        with pytest.raises(ConfigError) as err:
            OpenAIClient.from_url("openai://127.0.0.1:1/v1?model=x")
        assert "SECRET" not in str(err.value) and "control or non-ASCII" in str(err.value)


def test_a_trickling_server_is_cut_at_the_attempt_deadline() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            )
            while not stop.is_set():
                try:
                    conn.sendall(b" ")
                except OSError:
                    return
                time.sleep(0.2)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    client = OpenAIClient.from_url(
        f"openai://127.0.0.1:{listener.getsockname()[1]}/v1?model=x",
        timeout_s=1.0,
        policy=RetryPolicy(retries=0),
    )
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="timed out"):
        client.generate(Prompt("s", "u", b"img"), Sampling())
    assert time.perf_counter() - t0 < 3.0
    stop.set()
    t.join(5)
    listener.close()


def test_a_run_recorded_before_a_setting_existed_resumes_at_that_settings_default(tmp_path: Path) -> None:
    import json

    from georag.config import Config
    from georag.errors import OutputError
    from georag.locate.output import _check_settings, run_settings

    path = tmp_path / "preds.settings.json"
    settings = run_settings(Config(), llm="none", store=tmp_path, encoder="e")
    older = {
        k: v for k, v in json.loads(json.dumps(settings, default=str)).items() if k != "strategy.rag.select"
    }
    path.write_text(json.dumps(older))
    _check_settings(path, settings, resuming=True)  # the missing key is at its default: resumes
    path.write_text(json.dumps(older))
    changed = run_settings(
        Config().with_values({"strategy.rag.select": "first"}), llm="none", store=tmp_path, encoder="e"
    )
    with pytest.raises(OutputError, match=r"strategy\.rag\.select: was None, now 'first'"):
        _check_settings(path, changed, resuming=True)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_or_a_folder_named_as_a_photo_is_a_failure_not_a_hang(
    locate_env: dict[str, object], tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    good = Path(str(locate_env["queries"][0]))  # type: ignore[index]
    shutil.copy(good, photos / "a.jpg")
    os.mkfifo(photos / "b.jpg")  # opened, it would wait for a writer forever
    (photos / "c.jpg").mkdir()
    os.mkfifo(tmp_path / "d.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'd.jpg'}\n")
    out = tmp_path / "p.csv"
    args = [
        "locate",
        str(photos),
        "--list",
        str(listing),
        "--store",
        str(locate_env["store"]),
        "--out",
        str(out),
    ]
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(CliRunner().invoke(main, args)), daemon=True)
    worker.start()
    worker.join(120)
    assert done, "georag locate hung on a FIFO"
    result = done[0]
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    rows = {r.split(",")[0]: r for r in out.read_text().splitlines()[1:]}
    assert set(rows) == {"a.jpg", "b.jpg", "c.jpg", "d.jpg"}
    assert rows["a.jpg"].split(",")[1] != ""
    assert "is a FIFO, not a regular file" in rows["b.jpg"] and "is a FIFO" in rows["d.jpg"]
    assert "is a directory, not an image file" in rows["c.jpg"]
