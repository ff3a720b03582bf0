"""Tests georag.serving: the generated Triton model repository, and the pipeline served by a real server.

Generation: every config.pbtxt parses as Triton's ModelConfig (tritonclient's model_config_pb2), the
TensorRT / vLLM configs carry the fields production needs, refusals are clear, and the source tree's
triton_models/ is what the templates render; the pipeline's settings travel as one `Config` (the georag
model's ``georag_config`` parameter) and come back equal. Serving: a repository generated for a tiny
SigLIP (exported to ONNX and run by siglip_python), a store of the shared IM2GPS3k photos with a country
submap partition and the stand-in LLM of tests/triton_models runs on the CPU tritonserver of
nvidia-pytriton (tests/triton_server.py starts it on 127.0.0.1 and stops it); real photos go through HTTP
and gRPC and must get what the in-process Geolocator gets, with rag, knn, knn-medoid and vpr-guided (whose
submap search is a retrieval call with row ranges: checked against a numpy brute force); a corrupt image,
an oversized request, bad parameters, bad row ranges and a stalled LLM must each end in a clean error, and
the server must keep answering. The server tests skip, saying why, when the server environment
(nvidia-pytriton with georag, onnxruntime and Pillow installed) is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from georag.config import Config, PromptVariant, Sampling
from georag.errors import ConfigError, GeoRagError
from georag.serving.batching import run_batched
from georag.serving.errors import BadRequest, StepTimeout, public_message
from georag.serving.params import parse_params
from georag.serving.pipeline import Pipeline
from georag.triton.model_config import MAX_K, pipeline_values
from georag.triton.repository import RepositoryConfig, RepositoryError, write_example_repository
from georag.types import Completion, Neighbors, Prompt
from triton_server import MODEL_REPOSITORY, REPO, TritonServer, run_triton_server, triton_unavailable_reason

STANDIN = MODEL_REPOSITORY / "mllm_standin"
SERVER_MODULES = ("georag.serving.triton_glue", "georag._core", "onnxruntime", "PIL")
LLM_TIMEOUT_S = 2.0
MAX_IMAGE_MB = 1.0
MIN_SUBMAP_ROWS = 20
"""The served config's strategy.vpr.min_submap_rows: the test store's US submap holds more rows."""
ENGINE_TENSORRT = "10.8.0.43"
"""The TensorRT version the fake engines' sidecars record (as `georag encoder export` writes it)."""
LEAKS = re.compile(r"/work|/tmp|/home|Traceback|File \"|0x[0-9a-f]{4,}|127\.0\.0\.1|\.py\b")


# Messages, parameters and batching (no server).


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        ("cannot open /work/main/store/shards/a.npy: denied", "cannot open <path>", "/work"),
        ("model at C:\\models\\x\\y failed", "<path>", "models"),
        ("connect to 10.1.2.3:8001 refused", "<address>", "10.1.2.3"),
        ("<_io.BytesIO object at 0x7f3a2b1c0d90>", "<addr>", "0x7f3a"),
        ('Traceback (most recent call last):\n  File "/x/y.py", line 3\nValueError: no', "", "Traceback"),
        ('oops File "/srv/m/model.py", line 12, in execute', "oops", "model.py"),
    ],
)
def test_public_message_hides_internals(text: str, kept: str, gone: str) -> None:
    out = public_message(text)
    assert kept in out and gone not in out


def test_public_message_is_one_short_line() -> None:
    out = public_message("word\n" * 500)
    assert "\n" not in out and len(out) <= 300 and out.endswith("...")
    assert public_message("") == "request failed"


def test_params_defaults_and_values() -> None:
    assert parse_params(None).strategy == "rag"
    assert parse_params(b"  ").samples is None
    p = parse_params(
        '{"id": "a.jpg", "strategy": "knn", "samples": 3, "variants": "zero,rag:5:5", "seed": 7}'
    )
    assert (p.id, p.strategy, p.samples, p.seed) == ("a.jpg", "knn", 3, 7)
    assert p.variants == (PromptVariant("zero", 0, 0), PromptVariant("rag", 5, 5))
    assert parse_params('{"test_marker": "[[stall]]"}', allow_test_markers=True).test_marker == "[[stall]]"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[1]", "JSON object"),
        ("{bad", "JSON object"),
        ('{"k": 1}', "unknown parameter"),
        ('{"strategy": "gps"}', "strategy must be"),
        ('{"samples": 0}', "samples must be"),
        ('{"samples": true}', "samples must be"),
        ('{"variants": "rag:x"}', "prompt variant"),
        ('{"variants": "zero,zero,zero,zero,zero"}', "at most 4"),
        ('{"temperature": 9}', "temperature"),
        ('{"id": "../../etc/passwd"}', "id must be"),
        ('{"test_marker": "[[stall]]"}', "only by model repositories generated for tests"),
        ("x" * 5000, "at most 4096"),
    ],
)
def test_params_refused(raw: str, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        parse_params(raw)


def test_run_batched_fails_bad_rows_alone() -> None:
    good = np.ones((2, 4), np.float32)
    results = run_batched(
        [good, np.full((1, 4), np.nan, np.float32), np.zeros((1, 4), np.float32), good[:1], np.ones((1, 3))],
        lambda x: (x.sum(axis=1),),
        row_shape=(4,),
        nonzero=True,
    )
    assert [type(r).__name__ for r in results] == ["tuple", "BadRequest", "BadRequest", "tuple", "BadRequest"]
    assert results[0][0].tolist() == [4.0, 4.0] and results[3][0].tolist() == [4.0]  # type: ignore[index]
    assert "NaN" in str(results[1]) and "all-zero" in str(results[2]) and "[4]" in str(results[4])


# The pipeline in-process, with scripted steps (no server).


class ScriptedSteps:
    """Steps answering at once with fixed neighbors; the LLM answers Paris or garbage; a step may stall."""

    def __init__(self, llm: str = "paris") -> None:
        self.llm = llm
        self.searches: list[tuple[int, int, np.ndarray | None]] = []
        k = 4
        self.found = Neighbors(
            np.arange(k, dtype=np.int64)[None], np.linspace(0.9, 0.6, k, dtype=np.float32)[None],
            np.arange(10, 10 + k, dtype=np.int64)[None], np.linspace(-0.5, -0.2, k, dtype=np.float32)[None],
            np.array([[40.0, 41.0, 42.0, 43.0]]), np.full((1, k), -3.0),
            np.full((1, k), -30.0), np.full((1, k), 150.0),
        )  # fmt: skip

    async def embed(self, pixels: np.ndarray) -> np.ndarray:
        return np.ones(8, np.float32)

    async def retrieve(
        self, embedding: np.ndarray, k_near: int, k_far: int, row_ranges: np.ndarray | None = None
    ) -> Neighbors:
        self.searches.append((k_near, k_far, row_ranges))
        if self.llm == "stall-retrieval":
            await asyncio.sleep(30)
        return self.found

    async def generate(self, prompt: Prompt, sampling: Sampling) -> Completion:
        if self.llm == "stall":
            await asyncio.sleep(30)
        if self.llm == "garbage":
            return Completion(("no idea",) * sampling.n, 0.0)
        texts = [json.dumps({"latitude": 48.85 + 0.01 * i, "longitude": 2.35}) for i in range(sampling.n)]
        return Completion(tuple(texts), 0.0)


def _pipeline(llm: str = "paris", **values: Any) -> Pipeline:
    """A pipeline over ScriptedSteps; ``values``: dotted config keys with "__" for "." (serve__deadline_s)."""
    from georag.encoder.preprocess import ProcessorSpec

    base = {"search.k_near": 4, "search.k_far": 4, "strategy.rag.variants": "rag:4:4"}
    base["strategy.rag.sampling.n"] = 3
    given = {key.replace("__", "."): value for key, value in values.items()}
    config = Config().with_values({**base, **given})
    return Pipeline(config, ProcessorSpec.for_siglip(16), ScriptedSteps(llm))


def _png() -> bytes:
    from encoder_fixtures import png_bytes

    return png_bytes(1)


def test_pipeline_picks_the_medoid() -> None:
    pipeline = _pipeline()
    out = asyncio.run(pipeline.run(_png(), parse_params(None)))
    assert (out["lat"], out["lon"], out["strategy"]) == (48.86, 2.35, "rag")
    assert out["confidence"] == 1.0 and len(out["evidence"]["answers"]) == 3
    assert [n["row"] for n in out["evidence"]["neighbors"]["near"]] == [0, 1, 2, 3]
    steps = pipeline.steps
    assert isinstance(steps, ScriptedSteps) and steps.searches == [(4, 4, None)]  # the configured k
    assert pipeline.strategies == ("rag", "knn", "knn-medoid")  # no store: no vpr-guided


def test_pipeline_falls_back_to_the_top_neighbor_when_no_answer_parses() -> None:
    out = asyncio.run(_pipeline("garbage").run(_png(), parse_params(None)))
    assert (out["lat"], out["lon"], out["strategy"], out["confidence"]) == (40.0, -3.0, "rag>knn", 0.0)
    assert "stated coordinates" in out["fallback"]


def test_pipeline_bounds_stalled_steps() -> None:
    start = time.monotonic()
    with pytest.raises(StepTimeout, match=r"the retrieval step did not answer within 0\.2 s"):
        asyncio.run(
            _pipeline("stall-retrieval", serve__retrieval_timeout_s=0.2).run(_png(), parse_params(None))
        )
    with pytest.raises(StepTimeout, match=r"the LLM step did not answer within 0\.3 s"):
        asyncio.run(_pipeline("stall", serve__llm_timeout_s=0.3).run(_png(), parse_params(None)))
    with pytest.raises(StepTimeout, match=r"ran past its 0\.4 s deadline in the LLM step"):
        asyncio.run(_pipeline("stall", serve__deadline_s=0.4).run(_png(), parse_params(None)))
    assert time.monotonic() - start < 3.0


def test_pipeline_refuses_bad_requests() -> None:
    with pytest.raises(BadRequest, match="bad image: not an image"):
        asyncio.run(_pipeline().run(b"\x89PNG\r\n" + bytes(100), parse_params(None)))
    with pytest.raises(BadRequest, match=r"the image is 1\.0 MiB; this server accepts at most 0\.5 MiB"):
        asyncio.run(_pipeline(serve__max_image_mb=0.5).run(bytes(1 << 20), parse_params(None)))
    with pytest.raises(BadRequest, match="empty"):
        asyncio.run(_pipeline().run(b"", parse_params(None)))
    with pytest.raises(BadRequest, match="more references than this server retrieves"):
        asyncio.run(_pipeline().run(_png(), parse_params('{"variants": "rag:9:9"}')))


# The georag model's config parameter and request parameters (no server).


def test_the_pipeline_config_round_trips_through_its_parameter() -> None:
    from georag.serving.triton_glue import CONFIG_PARAMETER, pipeline_config

    config = Config().with_values(
        {
            "search.k_near": 24, "search.k_far": 8, "search.index": "ivf",
            "strategy.name": "vpr-guided", "strategy.rag.variants": "rag:5:5,zero",
            "strategy.rag.sampling.seed": 7, "strategy.rag.sampling.temperature": 0.25,
            "strategy.vpr.min_submap_rows": 3, "strategy.vpr.prior_weight": 0.75,
            "strategy.vpr.hybrid": True, "serve.deadline_s": 9.5, "serve.allow_test_markers": True,
        }
    )  # fmt: skip
    values = pipeline_values(config)
    assert "serve.max_requests" not in values and "llm.url" not in values  # georag serve's / not served
    back = pipeline_config({CONFIG_PARAMETER: json.dumps(values)})
    assert (back.search, back.strategy, back.serve) == (config.search, config.strategy, config.serve)
    assert pipeline_config({CONFIG_PARAMETER: "{}"}) == Config()
    with pytest.raises(ConfigError, match="regenerate the repository"):
        pipeline_config({})
    with pytest.raises(ConfigError, match="not JSON"):
        pipeline_config({CONFIG_PARAMETER: "{oops"})
    with pytest.raises(ConfigError, match="unknown config key"):
        pipeline_config({CONFIG_PARAMETER: '{"search.k_nearest": 3}'})


def test_a_request_naming_no_strategy_gets_the_configured_one() -> None:
    from georag.serving.triton_glue import default_strategy, request_params

    served = ("rag", "knn", "knn-medoid")
    knn = Config().with_values({"strategy.name": "knn"})
    assert default_strategy(knn, served) == "knn"
    assert default_strategy(Config().with_values({"strategy.name": "vpr-guided"}), served) == "rag"
    assert request_params(None, "knn", allow_test_markers=False).strategy == "knn"
    assert request_params(b"  ", "knn", allow_test_markers=False).strategy == "knn"
    params = request_params(b'{"id": "a.jpg", "samples": 2}', "knn-medoid", allow_test_markers=False)
    assert (params.id, params.strategy, params.samples) == ("a.jpg", "knn-medoid", 2)
    assert request_params(b'{"strategy": "rag"}', "knn", allow_test_markers=False).strategy == "rag"
    with pytest.raises(BadRequest, match="JSON object"):
        request_params(b"[1]", "knn", allow_test_markers=False)
    with pytest.raises(BadRequest, match="at most 4096"):
        request_params(b"{" + b" " * 5000 + b"}", "knn", allow_test_markers=False)


# The retrieval model's batching (no server): GeoStore searches grouped by k, row ranges searched alone.


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute_force(store: Any, query: np.ndarray, rows: np.ndarray, k_near: int, k_far: int) -> dict[str, Any]:
    """The top k_near and bottom k_far of ``rows`` (ascending, unique) by score against the stored
    (normalized) rows as they are, in numpy: ties to the lower row id, as every index orders them."""
    s = np.asarray(store.embeddings(rows), dtype=np.float64) @ _unit(query)
    near = rows[np.argsort(-s, kind="stable")[:k_near]]
    far = rows[np.argsort(s, kind="stable")[:k_far]]
    score = dict(zip(rows.tolist(), s.tolist(), strict=True))
    return {
        "near_ids": near, "near_scores": [score[i] for i in near.tolist()],
        "far_ids": far, "far_scores": [score[i] for i in far.tolist()],
    }  # fmt: skip


def _rows(ranges: list[list[int]]) -> np.ndarray:
    return np.unique(np.concatenate([np.arange(a, b) for a, b in ranges])).astype(np.int64)


def _check_answer(store: Any, got: dict[str, np.ndarray], want: dict[str, Any]) -> None:
    for side in ("near", "far"):
        ids = np.asarray(got[f"{side}_ids"]).reshape(-1)
        assert ids.tolist() == list(want[f"{side}_ids"]), side
        scores = np.asarray(got[f"{side}_scores"]).reshape(-1)
        np.testing.assert_allclose(scores, want[f"{side}_scores"], atol=2e-5)
        np.testing.assert_array_equal(np.asarray(got[f"{side}_lat"]).reshape(-1), store.lat[ids])
        np.testing.assert_array_equal(np.asarray(got[f"{side}_lon"]).reshape(-1), store.lon[ids])


def _as_dict(outputs: Any) -> dict[str, np.ndarray]:
    from georag.serving.retrieval import NEIGHBOR_OUTPUTS

    return dict(zip(NEIGHBOR_OUTPUTS, outputs, strict=True))


def test_retrieval_batches_group_by_k_and_search_row_ranges_alone(locate_env: dict[str, Any]) -> None:
    from georag.serving.triton_glue import RetrievalRequest, answer_retrieval
    from georag.store.store import GeoStore

    store = GeoStore.open(locate_env["store"])
    n, d = store.ntotal, store.dim
    q = np.random.default_rng(5).normal(size=(6, d)).astype(np.float32)
    ranges = [[10, 40], [100, 130], [35, 45]]  # overlapping and out of order: their union
    ranged = np.array([ranges, [[0, 20], [n - 10, n], [0, 1]]], dtype=np.int64)  # (2 queries, 3, 2)
    k = np.array([[8]], dtype=np.int64)
    batch = [
        RetrievalRequest(q[0:1]),  # the defaults
        RetrievalRequest(q[1:3], np.array([[8], [8]]), np.array([[3], [3]])),  # two queries at other k
        RetrievalRequest(q[3:4], k, np.array([[0]]), ranged[:1]),  # within row ranges, no far side
        RetrievalRequest(q[3:4], k, np.array([[3]]), np.array([[[0, n + 5]]])),  # beyond the store
        RetrievalRequest(q[4:6], np.array([[5], [5]]), np.array([[2], [2]]), ranged),  # ranges per query
        RetrievalRequest(q[3:4], k, None, np.array([[[7, 7]]])),  # an empty range
        RetrievalRequest(np.full((1, d), np.nan, np.float32)),  # NaN
        RetrievalRequest(q[0:1], np.array([[MAX_K + 1]])),  # too many rows
        RetrievalRequest(q[0:1], np.array([[4], [4]])),  # one k per query
        RetrievalRequest(q[5:6], None, np.array([[3]])),  # k_far alone
    ]
    calls: list[tuple[int, int, int, bool]] = []
    search = store.search

    def counting(queries: np.ndarray, k_near: int, k_far: int, **kw: Any) -> Neighbors:
        calls.append((len(queries), k_near, k_far, kw.get("row_ranges") is not None))
        return search(queries, k_near, k_far, **kw)

    store.search = counting  # type: ignore[method-assign]
    results = answer_retrieval(store, batch, 16, 16)
    assert [type(r).__name__ for r in results] == [
        "tuple", "tuple", "tuple", "BadRequest", "tuple", "BadRequest", "BadRequest", "BadRequest",
        "BadRequest", "tuple",
    ]  # fmt: skip
    # One search per k among the requests without ranges (the NaN one fails alone), one per ranged query.
    assert sorted(calls) == sorted(
        [(1, 16, 16, False), (2, 8, 3, False), (1, 16, 3, False), (1, 8, 0, True), (1, 5, 2, True),
         (1, 5, 2, True)]
    )  # fmt: skip
    store.search = search  # type: ignore[method-assign]
    all_rows = np.arange(n, dtype=np.int64)
    _check_answer(store, _as_dict(results[0]), _brute_force(store, q[0], all_rows, 16, 16))
    for j in (1, 2):
        got = {key: value[j - 1] for key, value in _as_dict(results[1]).items()}
        _check_answer(store, got, _brute_force(store, q[j], all_rows, 8, 3))
    within = _as_dict(results[2])
    assert within["near_ids"].shape == (1, 8) and within["far_ids"].shape == (1, 0)
    _check_answer(store, within, _brute_force(store, q[3], _rows(ranges), 8, 0))
    for j in (0, 1):
        got = {key: value[j] for key, value in _as_dict(results[4]).items()}
        _check_answer(store, got, _brute_force(store, q[4 + j], _rows(ranged[j].tolist()), 5, 2))
    _check_answer(store, _as_dict(results[9]), _brute_force(store, q[5], all_rows, 16, 3))
    messages = [str(results[i]) for i in (3, 5, 6, 7, 8)]
    assert all("row_ranges must be non-empty [start, end) pairs within" in m for m in messages[:2])
    assert "NaN" in messages[2] and f"k_near must be an integer in [1, {MAX_K}]" in messages[3]
    assert "one integer per query" in messages[4]


def test_a_failing_search_fails_its_own_group_only(locate_env: dict[str, Any]) -> None:
    from georag.serving.errors import StepFailed
    from georag.serving.triton_glue import RetrievalRequest, answer_retrieval
    from georag.store.store import GeoStore

    store = GeoStore.open(locate_env["store"])
    q = _unit(np.random.default_rng(1).normal(size=(2, store.dim))).astype(np.float32)
    search = store.search

    def broken_at_k8(queries: np.ndarray, k_near: int, k_far: int, **kw: Any) -> Neighbors:
        if k_near == 8:
            raise RuntimeError("/secret/path exploded")
        return search(queries, k_near, k_far, **kw)

    store.search = broken_at_k8  # type: ignore[method-assign]
    logged: list[str] = []
    batch = [RetrievalRequest(q[0:1]), RetrievalRequest(q[1:2], np.array([[8]]))]
    good, bad = answer_retrieval(store, batch, 16, 16, on_failure=logged.append)
    assert isinstance(good, tuple) and isinstance(bad, StepFailed)
    assert str(bad) == "the store search failed (see the server log)" and "/secret/path" in logged[0]


def test_the_submaps_of_the_georag_model_are_the_stores(served_store: Path) -> None:
    from georag.serving.triton_glue import submap_source
    from georag.store.store import GeoStore

    light, store = submap_source(str(served_store)), GeoStore.open(served_store)
    assert light is not None
    assert light.ntotal == store.ntotal and light.submap_names() == ["country"]
    ours, theirs = light.submaps("country"), store.submaps("country")
    assert ours.names == theirs.names and np.array_equal(ours.labels, theirs.labels)
    assert submap_source("") is None
    with pytest.raises(GeoRagError, match="no submaps 'kmeans8'"):
        light.submaps("kmeans8")


# Generating repositories (no server).


def _parse_config(path: Path) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _parameters(path: Path) -> dict[str, str]:
    return {k: v.string_value for k, v in _parse_config(path).parameters.items()}


def _served_config(path: Path) -> Config:
    """The Config a generated georag model runs with (as its model.py reads it)."""
    from georag.serving.triton_glue import pipeline_config

    return pipeline_config(_parameters(path))


@pytest.fixture(scope="module")
def exported(locate_env: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SigLIP of the shared store, exported to ONNX."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from georag.encoder import export_onnx

    out = tmp_path_factory.mktemp("onnx")
    export_onnx(locate_env["tiny"], out)
    return out


@pytest.fixture(scope="module")
def served_store(locate_env: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared store with a country submap partition (the session's store stays as it is)."""
    from georag.store.partition import make_submaps

    root = tmp_path_factory.mktemp("served-store") / "store"
    shutil.copytree(locate_env["store"], root)
    make_submaps(root, "country")
    return root


RAG_CALIBRATION = ((0.2, 0.4, 0.6, 0.8, 1.0), (0, 1, 0, 1, 0))
"""Agreements and outcomes of the served repository's rag calibration: full agreement becomes 0.5."""


def _calibrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The setting of a rag calibration file (`RAG_CALIBRATION`), written once per session."""
    from georag.geo.calibration import fit_calibration

    path = tmp_path_factory.getbasetemp() / "rag-calibration.json"
    if not path.is_file():
        agreement, within = RAG_CALIBRATION
        fit_calibration([{"agreement": a} for a in agreement], within, strategy="rag").save(path)
    return {"strategy.calibration": str(path)}


def _served_values() -> dict[str, Any]:
    return {
        "serve.allow_test_markers": True,
        "serve.max_image_mb": MAX_IMAGE_MB,
        "serve.llm_timeout_s": LLM_TIMEOUT_S,
        "serve.deadline_s": 20.0,
        "strategy.vpr.min_submap_rows": MIN_SUBMAP_ROWS,
    }


def _test_config(store: Path, exported: Path, **changes: Any) -> RepositoryConfig:
    settings = {
        "store": store,
        "encoder_onnx": exported,
        "config": Config().with_values(_served_values()),
        "python_encoder": True,
        "llm_standin": STANDIN,
    }
    return RepositoryConfig(**{**settings, **changes})


def _fake_engine(folder: Path, exported: Path, locate_env: dict[str, Any], **meta: Any) -> Path:
    """An engine folder as `georag encoder export --format tensorrt` writes it (the bytes are no engine)."""
    folder.mkdir()
    (folder / "encoder.engine").write_bytes(b"not a real engine")
    info = {
        "model_id": str(locate_env["tiny"]), "dim": 32, "height": 32, "width": 32, "batch": [1, 8, 32],
        "tensorrt": ENGINE_TENSORRT,
    }  # fmt: skip
    (folder / "encoder.engine.json").write_text(json.dumps({**info, **meta}))
    return folder


def test_repository_for_tests_configs(locate_env: dict[str, Any], exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import model_config_pb2 as pb

    from georag.triton.repository import write_repository

    models = write_repository(_test_config(locate_env["store"], exported), tmp_path / "repo")
    assert models == ["georag", "mllm_standin", "retrieval", "siglip_python"]
    configs = {m: _parse_config(tmp_path / "repo" / m / "config.pbtxt") for m in models}
    assert all(configs[m].name == m for m in models)
    assert (tmp_path / "repo" / "siglip_python" / "1" / "encoder.onnx").is_file()
    assert (tmp_path / "repo" / "georag" / "1" / "preprocessor_config.json").is_file()
    encoder, retrieval, pipeline = configs["siglip_python"], configs["retrieval"], configs["georag"]
    assert [(i.name, list(i.dims)) for i in encoder.input] == [("pixel_values", [3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in encoder.output] == [("embeddings", [32])]
    int64 = pb.DataType.TYPE_INT64
    assert [(i.name, list(i.dims), i.optional) for i in retrieval.input] == [
        ("embeddings", [32], False),
        ("k_near", [1], True),
        ("k_far", [1], True),
        ("row_ranges", [-1, 2], True),
    ]
    assert all(i.data_type == int64 for i in retrieval.input[1:])
    assert [o.name for o in retrieval.output][:4] == ["near_ids", "near_scores", "near_lat", "near_lon"]
    assert all(list(o.dims) == [-1] for o in retrieval.output)  # k varies per request
    assert [g.count for g in retrieval.instance_group] == [1]
    assert "ONE instance" in (tmp_path / "repo" / "retrieval" / "config.pbtxt").read_text()
    params = {k: v.string_value for k, v in pipeline.parameters.items()}
    assert sorted(params) == [
        "encoder_model", "family", "georag_config", "image_size", "llm_model", "max_requests",
        "retrieval_model",
    ]  # fmt: skip
    assert (params["encoder_model"], params["llm_model"], params["family"]) == (
        "siglip_python",
        "mllm_standin",
        "qwen2-vl",
    )
    assert (params["image_size"], params["max_requests"]) == ("32", "64")
    # The store's path is in a file beside model.py, not in a parameter any client reads (GET .../config).
    private = json.loads((tmp_path / "repo" / "georag" / "1" / "store.json").read_text())
    assert private == {"store": str(Path(locate_env["store"]).resolve())}
    served = _served_config(tmp_path / "repo" / "georag" / "config.pbtxt")
    expected = Config().with_values(_served_values())
    assert (served.search, served.strategy, served.serve) == (
        expected.search,
        expected.strategy,
        expected.serve,
    )
    assert served.serve.allow_test_markers and served.serve.max_image_bytes == int(MAX_IMAGE_MB * (1 << 20))
    stored = {k: v.string_value for k, v in retrieval.parameters.items()}
    assert "store" not in stored and "encoder" not in stored
    private = json.loads((tmp_path / "repo" / "retrieval" / "1" / "store.json").read_text())
    assert private["store"] == str(Path(locate_env["store"]).resolve())
    assert (stored["k_near"], stored["k_far"], stored["index"]) == ("16", "16", "exact")


def test_the_calibration_file_goes_beside_the_georag_model(
    locate_env: dict[str, Any], exported: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from georag.triton.repository import write_repository

    setting = _calibrated(tmp_path_factory)
    config = Config().with_values({**_served_values(), **setting})
    write_repository(_test_config(locate_env["store"], exported, config=config), tmp_path / "repo")
    folder = tmp_path / "repo" / "georag" / "1"
    assert (folder / "calibration.json").read_bytes() == Path(setting["strategy.calibration"]).read_bytes()
    assert _served_config(folder.parent / "config.pbtxt").strategy.calibration == ""  # no host path there
    knn = Config().with_values({**setting, "strategy.name": "knn"})
    with pytest.raises(ConfigError, match="fitted on rag predictions; this run's strategy is knn"):
        write_repository(_test_config(locate_env["store"], exported, config=knn), tmp_path / "knn")


def test_gpu_repository_configs(locate_env: dict[str, Any], exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import model_config_pb2 as pb

    from georag.triton.repository import write_repository

    engine = _fake_engine(tmp_path / "trt", exported, locate_env)
    config = RepositoryConfig(
        encoder_onnx=exported,
        config=Config(store=str(locate_env["store"])),
        encoder_trt=engine,
        server_tensorrt="10.8.0",  # the compatibility tables name some releases without the build number
        llm_model="Qwen/Qwen2.5-VL-7B-Instruct",
        family="qwen2.5-vl",
        max_model_len=16384,
        gpu_memory_utilization=0.9,
        max_pixels=512 * 28 * 28,
    )
    out = tmp_path / "repo"
    assert write_repository(config, out) == ["georag", "mllm", "retrieval", "siglip_trt"]
    assert (out / "siglip_trt" / "1" / "model.plan").read_bytes() == b"not a real engine"
    trt = _parse_config(out / "siglip_trt" / "config.pbtxt")
    assert (trt.platform, trt.max_batch_size) == ("tensorrt_plan", 32)
    assert list(trt.dynamic_batching.preferred_batch_size) == [8, 32]
    assert trt.dynamic_batching.max_queue_delay_microseconds > 0
    policy = trt.dynamic_batching.default_queue_policy
    assert (
        policy.timeout_action == pb.ModelQueuePolicy.REJECT
        and "timeout_action: REJECT" in (out / "siglip_trt" / "config.pbtxt").read_text()
    )
    assert policy.max_queue_size > 0 and policy.default_timeout_microseconds > 0
    assert [g.kind for g in trt.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    assert [(w.batch_size, list(w.inputs)) for w in trt.model_warmup] == [(8, ["pixel_values"])]
    assert "NOT RUN" in (out / "siglip_trt" / "config.pbtxt").read_text()
    assert f"built with TensorRT {ENGINE_TENSORRT}" in (out / "siglip_trt" / "config.pbtxt").read_text()
    mllm = _parse_config(out / "mllm" / "config.pbtxt")
    assert (mllm.backend, mllm.model_transaction_policy.decoupled, mllm.max_batch_size) == ("vllm", True, 0)
    assert "NOT RUN" in (out / "mllm" / "config.pbtxt").read_text()
    args = json.loads((out / "mllm" / "1" / "model.json").read_text())
    assert args["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (args["load_format"], args["trust_remote_code"]) == ("safetensors", False)
    assert (args["max_model_len"], args["gpu_memory_utilization"]) == (16384, 0.9)
    assert args["limit_mm_per_prompt"] == {"image": 1}
    assert args["mm_processor_kwargs"] == {"min_pixels": 4 * 28 * 28, "max_pixels": 512 * 28 * 28}
    params = _parameters(out / "georag" / "config.pbtxt")
    assert (params["encoder_model"], params["llm_model"], params["family"]) == (
        "siglip_trt",
        "mllm",
        "qwen2.5-vl",
    )
    served = _served_config(out / "georag" / "config.pbtxt")
    assert served.serve.max_image_bytes == 20 << 20 and not served.serve.allow_test_markers
    assert (served.search, served.strategy, served.serve) == (
        Config().search,
        Config().strategy,
        Config().serve,
    )


@pytest.mark.parametrize(
    ("family", "max_pixels", "remote_code", "processor"),
    [
        ("qwen2-vl", 1280 * 28 * 28, False, {"min_pixels": 3136, "max_pixels": 1280 * 28 * 28}),
        ("qwen2.5-vl", 3136, False, {"min_pixels": 3136, "max_pixels": 3136}),
        # InternVL: its own code (trust_remote_code), and whole 448 px tiles instead of pixel limits.
        ("internvl2", 1280 * 28 * 28, True, {"max_dynamic_patch": 5}),
        ("internvl2.5", 12 * 448 * 448 + 1, True, {"max_dynamic_patch": 12}),
        ("internvl2", 3136, True, {"max_dynamic_patch": 1}),
    ],
)
def test_the_vllm_engine_arguments_follow_the_family(
    locate_env: dict[str, Any],
    exported: Path,
    tmp_path: Path,
    family: str,
    max_pixels: int,
    remote_code: bool,
    processor: dict[str, int],
) -> None:
    from georag.triton.repository import write_repository

    config = RepositoryConfig(
        store=locate_env["store"], encoder_onnx=exported, family=family, max_pixels=max_pixels
    )
    write_repository(config, tmp_path / "repo")
    args = json.loads((tmp_path / "repo" / "mllm" / "1" / "model.json").read_text())
    assert (args["trust_remote_code"], args["mm_processor_kwargs"]) == (remote_code, processor)
    assert (args["model"], args["limit_mm_per_prompt"]) == ("Qwen/Qwen2-VL-7B-Instruct", {"image": 1})


def test_every_chat_family_has_vllm_engine_arguments() -> None:
    from georag.llm.chat_templates import known_families
    from georag.triton.engine_args import FAMILY_ENGINE_ARGS

    assert sorted(FAMILY_ENGINE_ARGS) == sorted(known_families())


@pytest.mark.parametrize(
    ("built", "server", "allow", "refused"),
    [
        (ENGINE_TENSORRT, "10.8.0.43", False, None),
        (ENGINE_TENSORRT, "10.8", False, None),  # 10.8 is 10.8.0
        (ENGINE_TENSORRT, "10.9.0.34", False, r"built with TensorRT 10\.8\.0\.43 but the serving Triton has "
         r"TensorRT 10\.9\.0\.34: it would never load"),
        (ENGINE_TENSORRT, "10.8.1", False, "but the serving Triton has TensorRT 10.8.1"),
        (ENGINE_TENSORRT, None, False, r"built with TensorRT 10\.8\.0\.43; name .* --server-tensorrt"),
        (None, "10.8.0", False, "does not say which TensorRT built it"),
        (ENGINE_TENSORRT, "10.9.0.34", True, None),
        (None, None, True, None),
    ],
)  # fmt: skip
def test_an_engine_of_another_tensorrt_is_refused(
    locate_env: dict[str, Any],
    exported: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    built: str | None,
    server: str | None,
    allow: bool,
    refused: str | None,
) -> None:
    """An engine loads only in the TensorRT that built it: a mismatch would leave the server never ready."""
    from georag.triton.repository import write_repository

    engine = _fake_engine(tmp_path / "trt", exported, locate_env, tensorrt=built)
    config = RepositoryConfig(
        store=locate_env["store"],
        encoder_onnx=exported,
        encoder_trt=engine,
        server_tensorrt=server,
        allow_tensorrt_mismatch=allow,
    )
    out = tmp_path / "repo"
    if refused is not None:
        with pytest.raises(RepositoryError, match=refused) as info:
            write_repository(config, out)
        assert "--allow-tensorrt-mismatch" in str(info.value)
        assert not out.exists()
        return
    with caplog.at_level("WARNING"):
        write_repository(config, out)
    assert (out / "siglip_trt" / "1" / "model.plan").is_file()
    warned = [r.getMessage() for r in caplog.records if "allow_tensorrt_mismatch" in r.getMessage()]
    assert bool(warned) == allow  # the allowed cases here are all mismatched or unchecked


def test_the_cli_checks_the_engines_tensorrt(
    locate_env: dict[str, Any], exported: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from georag.cli import main

    engine = _fake_engine(tmp_path / "trt", exported, locate_env)
    base = ["triton", "repo", "--store", str(locate_env["store"]), "--encoder-onnx", str(exported)]
    base += ["--encoder-trt", str(engine)]
    refused = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "a"), "--server-tensorrt", "10.9.0"])
    assert refused.exit_code != 0
    assert "TensorRT 10.8.0.43 but the serving Triton has TensorRT 10.9.0" in refused.output
    unnamed = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "b")])
    assert unnamed.exit_code != 0 and "--server-tensorrt" in unnamed.output
    forced = [*base, "--out", str(tmp_path / "c"), "--server-tensorrt", "10.9.0"]
    forced.append("--allow-tensorrt-mismatch")
    assert CliRunner().invoke(main, forced).exit_code == 0
    matching = CliRunner().invoke(
        main, [*base, "--out", str(tmp_path / "d"), "--server-tensorrt", "10.8.0.43"]
    )
    assert matching.exit_code == 0, matching.output
    assert (tmp_path / "d" / "siglip_trt" / "1" / "model.plan").is_file()


def test_cpu_repository_uses_the_onnxruntime_backend(
    locate_env: dict[str, Any], exported: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tritonclient.grpc")
    from tritonclient.grpc import model_config_pb2 as pb

    from georag.triton.repository import write_repository

    config = RepositoryConfig(store=locate_env["store"], encoder_onnx=exported)
    assert "siglip_onnx" in write_repository(config, tmp_path / "repo")
    onnx = _parse_config(tmp_path / "repo" / "siglip_onnx" / "config.pbtxt")
    assert (onnx.backend, onnx.default_model_filename) == ("onnxruntime", "model.onnx")
    assert [g.kind for g in onnx.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert [i.name for i in onnx.input] == ["pixel_values"] and [o.name for o in onnx.output] == [
        "embeddings"
    ]
    assert (tmp_path / "repo" / "siglip_onnx" / "1" / "model.onnx").is_file()


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_example_repository_is_what_the_templates_render(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    write_example_repository(tmp_path / "example")
    stale = "triton_models/ is stale: run `georag triton example --out triton_models --overwrite`"
    assert _files(tmp_path / "example") == _files(REPO / "triton_models"), stale
    for config in (REPO / "triton_models").glob("*/config.pbtxt"):
        assert _parse_config(config).name == config.parent.name
    assert _served_config(REPO / "triton_models" / "georag" / "config.pbtxt").strategy == Config().strategy
    text = (REPO / "triton_models" / "georag" / "config.pbtxt").read_text()
    assert "rag|knn|knn-medoid|vpr-guided" in text and "vpr-guided  asks" in text


def test_generation_refusals(
    locate_env: dict[str, Any], exported: Path, served_store: Path, tmp_path: Path
) -> None:
    from georag.triton.repository import write_repository

    with pytest.raises(RepositoryError, match="engine was built for"):
        write_repository(
            RepositoryConfig(
                store=locate_env["store"],
                encoder_onnx=exported,
                encoder_trt=_fake_engine(tmp_path / "trt", exported, locate_env, dim=64),
            ),
            tmp_path / "a",
        )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    config = _test_config(locate_env["store"], exported)
    with pytest.raises(RepositoryError, match="not empty"):
        write_repository(config, busy)
    with pytest.raises(RepositoryError, match="no georag repository"):
        write_repository(config, busy, overwrite=True)
    assert (busy / "notes.txt").read_text() == "mine"
    write_repository(config, tmp_path / "b")
    write_repository(config, tmp_path / "b", overwrite=True)
    with pytest.raises(ConfigError, match="prompt variant rag:32:32 shows more references"):
        Config().with_values({"strategy.rag.variants": "rag:32:32"})
    with pytest.raises(RepositoryError, match="cannot read the store"):
        write_repository(RepositoryConfig(store=tmp_path, encoder_onnx=exported), tmp_path / "c")
    with pytest.raises(RepositoryError, match="no store given"):
        RepositoryConfig(encoder_onnx=exported)
    with pytest.raises(RepositoryError, match="two stores given"):
        RepositoryConfig(encoder_onnx=exported, store=tmp_path, config=Config(store="elsewhere"))
    with pytest.raises(RepositoryError, match="unknown model family"):
        RepositoryConfig(encoder_onnx=exported, store=tmp_path, family="gpt-9")
    with pytest.raises(RepositoryError, match=f"at most {MAX_K} rows"):
        RepositoryConfig(
            encoder_onnx=exported,
            store=tmp_path,
            config=Config().with_values({"strategy.vpr.rerank_k": 2000}),
        )
    with pytest.raises(ConfigError, match="a served request does not carry"):
        RepositoryConfig(
            encoder_onnx=exported, store=tmp_path, config=Config().with_values({"exclusion.radius_km": 25})
        )
    with pytest.raises(RepositoryError, match="Triton reads 0 as no limit"):
        RepositoryConfig(
            encoder_onnx=exported, store=tmp_path, config=Config().with_values({"serve.max_queue": 0})
        )
    with pytest.raises(RepositoryError, match="pipeline_instances must be an integer >= 1"):
        RepositoryConfig(encoder_onnx=exported, store=tmp_path, pipeline_instances=0)
    ivf = Config().with_values({"search.index": "ivf"})
    with pytest.raises(RepositoryError, match="the store has no index 'ivf'"):
        write_repository(_test_config(locate_env["store"], exported, config=ivf), tmp_path / "d")
    vpr = Config().with_values({"strategy.name": "vpr-guided"})
    with pytest.raises(RepositoryError, match="default strategy is vpr-guided but the store has no submap"):
        write_repository(_test_config(locate_env["store"], exported, config=vpr), tmp_path / "e")
    write_repository(_test_config(served_store, exported, config=vpr), tmp_path / "f")  # it has one


def test_generation_refuses_another_encoders_export(locate_env: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from encoder_fixtures import make_tiny_siglip
    from georag.encoder import export_onnx
    from georag.triton.repository import write_repository

    other = export_onnx(make_tiny_siglip(tmp_path / "other", seed=3), tmp_path / "onnx").parent
    with pytest.raises(RepositoryError, match=r"the store was built with .* but the ONNX export is of"):
        write_repository(RepositoryConfig(store=locate_env["store"], encoder_onnx=other), tmp_path / "r")


def test_cli_writes_the_repository(locate_env: dict[str, Any], exported: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    from click.testing import CliRunner

    from georag.cli import main

    out = tmp_path / "repo"
    args = ["triton", "repo", "--out", str(out), "--store", str(locate_env["store"])]
    args += ["--encoder-onnx", str(exported), "--python-encoder", "--llm-standin", str(STANDIN)]
    result = CliRunner().invoke(main, [*args, "--family", "internvl2.5", "--samples", "3"])
    assert result.exit_code == 0, result.output
    assert "georag, mllm_standin, retrieval, siglip_python" in result.output
    text = (out / "georag" / "config.pbtxt").read_text()
    assert 'key: "family" value: { string_value: "internvl2.5" }' in text
    served = _served_config(out / "georag" / "config.pbtxt")
    assert served.strategy.rag.sampling.n == 3 and served.strategy.name == "rag"
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "not empty" in again.output

    # A config file, with the options winning over it; the store may come from the file.
    toml = tmp_path / "georag.toml"
    toml.write_text(
        f"store = {json.dumps(str(locate_env['store']))}\n"
        "[search]\nk_near = 12\nk_far = 6\n"
        '[strategy]\nname = "knn-medoid"\nknn_k = 5\n'
        "[strategy.rag.sampling]\nn = 4\ntemperature = 0.3\n"
        "[serve]\ndeadline_s = 33.0\n"
    )
    options = ["--k-far", "4", "--temperature", "0.9", "--llm-timeout-s", "7", "--max-image-mb", "2.5"]
    options += ["--deadline-s", "44", "--index", "exact", "--allow-test-markers", "--rerank-k", "8"]
    options += ["--max-requests", "9", "--max-queue", "5"]
    result = CliRunner().invoke(
        main,
        ["triton", "repo", "--out", str(tmp_path / "r2"), "--config", str(toml), "--encoder-onnx",
         str(exported), "--python-encoder", "--llm-standin", str(STANDIN), *options],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    served = _served_config(tmp_path / "r2" / "georag" / "config.pbtxt")
    assert (served.search.k_near, served.search.k_far, served.search.index) == (12, 4, "exact")
    assert (served.strategy.name, served.strategy.knn_k, served.strategy.vpr.rerank_k) == ("knn-medoid", 5, 8)
    assert str(served.strategy.rag.variants[0]) == "rag:12:4"  # follows the retrieval depth
    assert (served.strategy.rag.sampling.n, served.strategy.rag.sampling.temperature) == (4, 0.9)
    assert (served.serve.llm_timeout_s, served.serve.max_image_mb, served.serve.deadline_s) == (
        7.0,
        2.5,
        44.0,
    )
    assert served.serve.allow_test_markers
    pipeline = _parse_config(tmp_path / "r2" / "georag" / "config.pbtxt")
    assert pipeline.parameters["max_requests"].string_value == "9"  # per instance
    assert pipeline.dynamic_batching.default_queue_policy.max_queue_size == 5
    retrieval = _parameters(tmp_path / "r2" / "retrieval" / "config.pbtxt")
    assert (retrieval["k_near"], retrieval["k_far"]) == ("12", "4")
    # A bad value names its option or key.
    bad = CliRunner().invoke(main, [*args[:3], str(tmp_path / "r3"), *args[4:], "--variants", "rag:99:99"])
    assert bad.exit_code != 0 and "shows more references than are retrieved" in bad.output
    missing = CliRunner().invoke(
        main, ["triton", "repo", "--out", str(tmp_path / "r4"), "--encoder-onnx", str(exported)]
    )
    assert missing.exit_code != 0 and "--store" in missing.output


# The repository served by a real tritonserver.


@pytest.fixture(scope="module")
def served(
    served_store: Path, exported: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    reason = triton_unavailable_reason(SERVER_MODULES)
    if reason is not None:
        pytest.skip(reason)
    pytest.importorskip("tritonclient.grpc")
    from georag.triton.repository import write_repository

    repo = tmp_path_factory.mktemp("served") / "repo"
    config = Config().with_values({**_served_values(), **_calibrated(tmp_path_factory)})
    write_repository(_test_config(served_store, exported, config=config), repo)
    with run_triton_server(repo, startup_timeout_s=120.0) as server:
        yield server
    with pytest.raises(urllib.error.URLError):  # stopped: nothing answers on its port any more
        urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2/health/live", timeout=2.0)


class Caller:
    """Sends one photo to the `georag` model over one protocol; returns the result or the error."""

    def __init__(self, server: TritonServer, protocol: str) -> None:
        import tritonclient.grpc as grpc
        import tritonclient.http as http

        self.module: Any = grpc if protocol == "grpc" else http
        port = server.grpc_port if protocol == "grpc" else server.http_port
        self.client = self.module.InferenceServerClient(f"127.0.0.1:{port}")

    def __call__(self, image: bytes, params: dict[str, Any] | None = None) -> dict[str, Any]:
        inputs = [self.module.InferInput("image", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[image]], dtype=np.object_))
        if params is not None:
            inputs.append(self.module.InferInput("parameters", [1, 1], "BYTES"))
            inputs[1].set_data_from_numpy(np.array([[json.dumps(params).encode()]], dtype=np.object_))
        answer = self.client.infer("georag", inputs)
        return dict(json.loads(answer.as_numpy("result")[0, 0]))

    def error(self, image: bytes, params: dict[str, Any] | None = None) -> tuple[str, str]:
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException) as info:
            self(image, params)
        return str(info.value.status()), str(info.value.message())


@pytest.fixture(params=["http", "grpc"])
def caller(request: pytest.FixtureRequest, served: TritonServer) -> Iterator[Caller]:
    found = Caller(served, request.param)
    yield found
    found.client.close()


def _in_process(
    served_store: Path,
    exported: Path,
    server: TritonServer,
    paths: list[Path],
    strategy: str,
    values: dict[str, Any] | None = None,
) -> list[Any]:
    """The Geolocator's predictions for ``paths``: the same ONNX encoder, store, stand-in LLM and config."""
    from georag.encoder import load_encoder
    from georag.llm.triton_client import TritonClient
    from georag.locate.geolocator import Geolocator
    from georag.store.store import GeoStore

    encoder = load_encoder(exported, backend="onnxruntime")
    store = GeoStore.open(served_store)
    config = Config().with_values({**_served_values(), **(values or {}), "strategy.name": strategy})
    with TritonClient.from_url(server.url("mllm_standin", "http")) as llm:
        return list(Geolocator(store, encoder, llm, config).locate(paths))


def test_all_models_ready(served: TritonServer) -> None:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    for client in (
        http.InferenceServerClient(f"127.0.0.1:{served.http_port}"),
        grpc.InferenceServerClient(f"127.0.0.1:{served.grpc_port}"),
    ):
        assert client.is_server_ready()
        for model in ("georag", "retrieval", "siglip_python", "mllm_standin"):
            assert client.is_model_ready(model), model
        client.close()
    # Triton 2.51's stub (nvidia-pytriton 0.7.0) has PreferredMemory (23.04+) but no BLS cancel (25.04+).
    log = served.log_path.read_text(errors="replace")
    assert "abandoned LLM calls are not cancellable on this Triton (before 25.04)" in log
    assert "BLS outputs asked for in CPU memory" in log


def test_photos_are_located_as_in_process(
    caller: Caller,
    served: TritonServer,
    locate_env: dict[str, Any],
    served_store: Path,
    exported: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    paths = locate_env["queries"][:3]
    expected = _in_process(served_store, exported, served, paths, "rag", _calibrated(tmp_path_factory))
    for path, want in zip(paths, expected, strict=True):
        got = caller(path.read_bytes(), {"id": path.name})
        assert got["id"] == path.name
        assert (
            (got["strategy"], got["lat"], got["lon"])
            == (want.strategy, want.lat, want.lon)
            == (
                "rag",
                48.8766,
                2.3722,
            )
        )  # the stand-in answers Paris + 0.01 * i for sample i: the medoid of five is sample 2
        assert got["confidence"] == pytest.approx(want.confidence)
        # calibrated as in-process: the five samples agree (1.0), which the calibration makes 0.5
        assert (got["evidence"]["raw_confidence"], got["confidence"]) == (1.0, 0.5)
        # Same prompt length, image bytes and sampling reached the LLM: the stand-in reports them.
        assert [a["text"] for a in got["evidence"]["answers"]] == [
            a["text"] for a in want.evidence["answers"]
        ]
        near, want_near = got["evidence"]["neighbors"]["near"], want.evidence["neighbors"]["near"]
        assert [n["row"] for n in near] == [n["row"] for n in want_near]
        assert [n["score"] for n in near] == pytest.approx([n["score"] for n in want_near], abs=1e-4)
        assert [n["row"] for n in got["evidence"]["neighbors"]["far"]] == [
            n["row"] for n in want.evidence["neighbors"]["far"]
        ]


def test_knn_and_the_fallback_match_in_process(
    caller: Caller, served: TritonServer, locate_env: dict[str, Any], served_store: Path, exported: Path
) -> None:
    paths = locate_env["queries"][3:5]
    knn = _in_process(served_store, exported, served, paths, "knn")
    medoid = _in_process(served_store, exported, served, paths, "knn-medoid")
    for path, top1, med in zip(paths, knn, medoid, strict=True):
        image = path.read_bytes()
        got = caller(image, {"strategy": "knn"})
        assert (got["strategy"], got["lat"], got["lon"]) == ("knn", top1.lat, top1.lon)
        assert got["confidence"] == pytest.approx(top1.confidence)
        got = caller(image, {"strategy": "knn-medoid"})
        assert (got["lat"], got["lon"]) == (med.lat, med.lon)
        got = caller(image, {"test_marker": "[[garbage]]"})
        assert (got["strategy"], got["lat"], got["lon"], got["confidence"]) == (
            "rag>knn",
            top1.lat,
            top1.lon,
            0.0,
        )
        assert got["fallback"] == "none of the 5 LLM answers stated coordinates"


def test_vpr_guided_is_served_as_in_process(
    caller: Caller, served: TritonServer, locate_env: dict[str, Any], served_store: Path, exported: Path
) -> None:
    """The stand-in's prior is the US (New York): the submap search stays inside the US rows, and every
    candidate, the re-ranking and the answer equal the in-process Geolocator's."""
    from georag.store.store import GeoStore

    submaps = GeoStore.open(served_store).submaps("country")
    assert submaps.size("US") >= MIN_SUBMAP_ROWS
    us_rows = set(np.concatenate([np.arange(a, b) for a, b in submaps.ranges("US")]).tolist())
    paths = locate_env["queries"][5:8]
    expected = _in_process(served_store, exported, served, paths, "vpr-guided")
    for path, want in zip(paths, expected, strict=True):
        got = caller(path.read_bytes(), {"id": path.name, "strategy": "vpr-guided"})
        assert (got["strategy"], got["fallback"]) == (want.strategy, want.fallback) == ("vpr-guided", None)
        assert (got["lat"], got["lon"]) == (want.lat, want.lon)
        assert got["confidence"] == pytest.approx(want.confidence) == 1.0  # the five samples agree
        prior, submap = got["evidence"]["prior"], got["evidence"]["submap"]
        assert (prior["country"], prior["votes"]) == ("US", {"US": 5})
        assert (submap["chosen"], submap["rows_searched"]) == (["US"], submaps.size("US"))
        candidates = got["evidence"]["candidates"]
        assert candidates == want.evidence["candidates"] and len(candidates) == 16
        assert all(c["row"] in us_rows for c in candidates)
        best = candidates[0]  # the re-ranked order: the first is the answer
        assert (best["lat"], best["lon"]) == (got["lat"], got["lon"])
        assert (
            submaps.names[submaps.labels[best["row"]]] == "US"
        )  # the chosen row lies in the prior's country
        assert {"prior_s", "submap_search_s", "rerank_s"} <= set(got["evidence"]["timings"])
    # No usable prior: the documented fallback to the global search, with its reason.
    got = caller(paths[0].read_bytes(), {"strategy": "vpr-guided", "test_marker": "[[garbage]]"})
    assert got["strategy"] == "vpr-guided>global"
    assert got["fallback"].startswith("no usable prior: none of the 5 prior answers")
    assert [c["visual_rank"] for c in got["evidence"]["candidates"]] == list(range(16))


class RetrievalCaller:
    """Sends queries straight to the `retrieval` model over gRPC."""

    def __init__(self, server: TritonServer) -> None:
        import tritonclient.grpc as grpc

        self.grpc = grpc
        self.client = grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

    def inputs(
        self, q: np.ndarray, k: tuple[int, int] | None = None, ranges: list[list[int]] | None = None
    ) -> list[Any]:
        grpc = self.grpc
        found = [grpc.InferInput("embeddings", [1, q.size], "FP32")]
        found[0].set_data_from_numpy(np.ascontiguousarray(q.reshape(1, -1), dtype=np.float32))
        if k is not None:
            for name, value in zip(("k_near", "k_far"), k, strict=True):
                found.append(grpc.InferInput(name, [1, 1], "INT64"))
                found[-1].set_data_from_numpy(np.array([[value]], dtype=np.int64))
        if ranges is not None:
            arr = np.array([ranges], dtype=np.int64)
            found.append(grpc.InferInput("row_ranges", list(arr.shape), "INT64"))
            found[-1].set_data_from_numpy(arr)
        return found

    def __call__(self, inputs: list[Any]) -> dict[str, np.ndarray]:
        from georag.serving.retrieval import NEIGHBOR_OUTPUTS

        answer = self.client.infer("retrieval", inputs)
        return {name: answer.as_numpy(name) for name in NEIGHBOR_OUTPUTS}


def test_retrieval_within_row_ranges_is_the_brute_force(served: TritonServer, served_store: Path) -> None:
    from georag.store.store import GeoStore

    store = GeoStore.open(served_store)
    call = RetrievalCaller(served)
    q = np.random.default_rng(11).normal(size=(4, store.dim)).astype(np.float32)
    ranges = [[30, 70], [200, store.ntotal], [60, 90]]
    got = call(call.inputs(q[0], (8, 3), ranges))
    assert got["near_ids"].shape == (1, 8) and got["far_ids"].shape == (1, 3)
    _check_answer(store, got, _brute_force(store, q[0], _rows(ranges), 8, 3))
    # The vpr-guided search: no far side at all.
    got = call(call.inputs(q[1], (16, 0), ranges))
    assert got["far_ids"].shape == (1, 0)
    _check_answer(store, got, _brute_force(store, q[1], _rows(ranges), 16, 0))
    # No k inputs: the configured depth over the whole store.
    got = call(call.inputs(q[2]))
    _check_answer(store, got, _brute_force(store, q[2], np.arange(store.ntotal), 16, 16))
    call.client.close()


def test_bad_row_ranges_fail_alone(served: TritonServer, served_store: Path) -> None:
    """Bad requests sent at once with good ones: each bad one gets INVALID_ARG, every good one its rows."""
    from tritonclient.utils import InferenceServerException

    from georag.store.store import GeoStore

    store = GeoStore.open(served_store)
    n = store.ntotal
    q = np.random.default_rng(12).normal(size=(12, store.dim)).astype(np.float32)
    callers = [RetrievalCaller(served) for _ in range(12)]
    cases: list[tuple[tuple[int, int] | None, list[list[int]] | None, str | None]] = [
        (None, None, None),
        ((8, 3), [[0, 50]], None),
        ((8, 3), [[0, n + 1]], "row_ranges must be non-empty [start, end) pairs within"),
        ((4, 2), None, None),
        ((8, 3), [[20, 20]], "row_ranges must be non-empty"),
        (None, None, None),
        ((8, 3), [[-5, 10]], "row_ranges must be non-empty"),
        ((MAX_K + 1, 2), None, f"k_near must be an integer in [1, {MAX_K}]"),
        ((4, 2), None, None),
        ((8, 3), [[100, 150], [10, 20]], None),
        (None, None, None),
        ((0, 3), None, "k_near must be an integer in [1"),
    ]

    def one(i: int) -> Any:
        k, ranges, _ = cases[i]
        try:
            return callers[i](callers[i].inputs(q[i], k, ranges))
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(one, range(len(cases))))
    for i, ((k, ranges, error), got) in enumerate(zip(cases, results, strict=True)):
        if error is not None:
            assert isinstance(got, InferenceServerException), i
            assert str(got.status()) == "StatusCode.INVALID_ARGUMENT" and error in str(got.message()), i
            _clean(str(got.message()))
            continue
        assert isinstance(got, dict), (i, got)
        rows = np.arange(n, dtype=np.int64) if ranges is None else _rows(ranges)
        kn, kf = k or (16, 16)
        _check_answer(store, got, _brute_force(store, q[i], rows, kn, kf))
    for c in callers:
        c.client.close()


def test_an_echoed_prompt_is_cut_off(caller: Caller, locate_env: dict[str, Any]) -> None:
    """A server that echoes the prompt despite exclude_input_in_output: the pipeline cuts it off, so the
    answers parse as they would unechoed (and the references' coordinates in the prompt are not read)."""
    photo = locate_env["queries"][0].read_bytes()
    plain, echoed = caller(photo), caller(photo, {"test_marker": "[[echo]]"})
    assert (echoed["strategy"], echoed["lat"], echoed["lon"]) == ("rag", plain["lat"], plain["lon"])
    answers = echoed["evidence"]["answers"]
    assert answers and all(a["echoed"] for a in answers)
    assert not any(a["echoed"] for a in plain["evidence"]["answers"])
    assert all(a["text"].startswith('{"latitude"') and "[[echo]]" not in a["text"] for a in answers)


def _clean(message: str) -> None:
    assert not LEAKS.search(message), f"internal detail in the error: {message!r}"


def test_clean_errors(caller: Caller, locate_env: dict[str, Any]) -> None:
    photo = locate_env["queries"][0].read_bytes()
    status, message = caller.error(b"\xff\xd8\xff" + random.Random(3).randbytes(4000))
    assert status in ("400", "StatusCode.INVALID_ARGUMENT") and "bad image: not an image" in message
    _clean(message)
    status, message = caller.error(photo[: len(photo) // 3])
    assert "bad image: truncated or corrupt JPEG" in message
    _clean(message)
    status, message = caller.error(os.urandom(int(1.5 * (1 << 20))))
    assert status in ("400", "StatusCode.INVALID_ARGUMENT")
    assert "the image is 1.5 MiB; this server accepts at most 1.0 MiB" in message
    _clean(message)
    status, message = caller.error(photo, {"samples": 99})
    assert "samples must be an integer in [1, 16]" in message
    start = time.monotonic()
    status, message = caller.error(photo, {"test_marker": "[[stall]]"})
    waited = time.monotonic() - start
    assert status in ("503", "StatusCode.UNAVAILABLE")
    assert message.endswith(f"the LLM step did not answer within {LLM_TIMEOUT_S:g} s")
    assert LLM_TIMEOUT_S <= waited < LLM_TIMEOUT_S + 3.0
    _clean(message)
    assert caller(photo)["strategy"] == "rag"  # nothing is left stuck


def test_requests_run_concurrently(served: TritonServer, locate_env: dict[str, Any]) -> None:
    """Eight photos whose LLM takes 0.2 s each finish together, not one after another."""
    callers = [Caller(served, "grpc") for _ in range(8)]
    photos = [p.read_bytes() for p in locate_env["queries"][:8]]
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda c, p: c(p, {"test_marker": "[[slow]]", "samples": 1}), callers, photos)
        )
    elapsed = time.monotonic() - start
    assert [r["strategy"] for r in results] == ["rag"] * 8
    most = max(
        json.loads(a["text"])["received"]["slow_in_flight"] for r in results for a in r["evidence"]["answers"]
    )
    # One after another would take 8 x 0.2 s; the margin is for a loaded 2-core machine.
    assert most >= 3 and elapsed < 6 * 0.2, (most, elapsed)
    for c in callers:
        c.client.close()
