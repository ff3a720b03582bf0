#!/usr/bin/env python
"""`georag locate` throughput: the pipelined run against the slowest stage alone, with a stand-in LLM.

Setup: the shared IM2GPS3k sample (300 JPEGs) is both the store and the queries; the encoder is a random
SigLIP (``--arch tiny``: 2 layers, 32 px, so the LLM is the slowest stage; ``--arch base``: the real
siglip-base-patch16-224 architecture, so the encoder is); the LLM is the project's stand-in
OpenAI-compatible server (tests/openai_standin.py) answering every request after a fixed delay
(``--llm-latency``, default 500 ms), with ``--in-flight`` requests at once (default 16), one request of
n=1 per photo. Each stage is first run alone over all photos:

  encode  Encoder.encode (decode + preprocess + embed, batches of 32)
  search  GeoStore.search of the embeddings, in the same batches (k = 16 + 16)
  llm     prompt + request + parse for every photo, ``--in-flight`` at once

then the whole pipeline (Geolocator.locate: the three stages overlapped). The table gives images/s, the
per-stage latency p50/p95 inside the pipelined run (encode and search per photo: its batch's time / batch
size), and pipelined / slowest-stage-alone (target >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from timing import log

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
IMAGES = REPO.parent / "shared" / "data" / "im2gps3k" / "images"
META = REPO.parent / "shared" / "data" / "im2gps3k" / "im2gps3k_places365.csv"
BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


def make_model(folder: Path, arch: str) -> Path:
    from georag.encoder.tiny import make_tiny_siglip

    if arch == "tiny":
        return make_tiny_siglip(folder)
    import torch
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(**BASE, image_size=224, patch_size=16)).eval().save_pretrained(
        folder
    )
    SiglipImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _no_search(request: object) -> object:
    raise AssertionError("the rag route does not search again")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["tiny", "base"], default="tiny", help="encoder size (default tiny)")
    ap.add_argument("--n", type=int, default=300, help="photos (default 300, all of the sample)")
    ap.add_argument(
        "--llm-latency", type=float, default=0.5, help="stand-in delay per request, s (default 0.5)"
    )
    ap.add_argument("--in-flight", type=int, default=16, help="LLM requests at once (default 16)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    if not IMAGES.is_dir():
        raise SystemExit(f"needs the shared IM2GPS3k sample at {IMAGES}")

    from georag.config import Config
    from georag.encoder import load_encoder
    from georag.llm.backends import open_llm
    from georag.llm.image import llm_photo
    from georag.locate.geolocator import Geolocator, ask_llm
    from georag.store.build import BuildRequest, build_source
    from georag.store.store import GeoStore
    from georag.strategies.rag import Rag
    from georag.strategies.route import run_route
    from georag.types import Retrieved
    from openai_standin import StandIn

    paths = sorted(IMAGES.iterdir())[: args.n]
    with tempfile.TemporaryDirectory() as tmp, StandIn(delay_s=args.llm_latency) as server:
        work = Path(tmp)
        model = make_model(work / "model", args.arch)
        encoder = load_encoder(model, batch_size=32)
        log("building the store")
        build_source(
            BuildRequest(
                store=work / "store", dataset="im2gps3k", metadata=META, encoder=str(model), images=(IMAGES,)
            ),
            add=False,
            encoder_factory=lambda: encoder,
        )
        store = GeoStore.open(work / "store")
        store.flat_index()
        llm = open_llm(server.url, concurrency=args.in_flight)
        assert llm is not None
        config = Config().with_values(
            {"strategy.name": "rag", "strategy.rag.sampling.n": 1, "llm.concurrency": args.in_flight}
        )
        rag = Rag(config.strategy.rag)
        alone: dict[str, float] = {}

        log("encode alone")
        encoder.encode(paths[:8])  # warm-up: first-call initialisation is not throughput
        t0 = time.perf_counter()
        enc = encoder.encode(paths, ids=[p.name for p in paths])
        alone["encode"] = len(paths) / (time.perf_counter() - t0)

        log("search alone")
        t0 = time.perf_counter()
        results = [store.search(enc.embeddings[i : i + 32], 16, 16) for i in range(0, len(enc), 32)]
        alone["search"] = len(enc) / (time.perf_counter() - t0)

        log("llm alone")
        items = [
            res.retrieved(j, enc.ids[32 * b + j]) for b, res in enumerate(results) for j in range(len(res))
        ]

        def one(item: Retrieved) -> Any:
            photo = llm_photo((IMAGES / item.id).read_bytes())
            return run_route(rag.route(item, photo), lambda ask: ask_llm(llm, ask), _no_search, {})

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.in_flight) as pool:
            list(pool.map(one, items))
        alone["llm"] = len(items) / (time.perf_counter() - t0)

        log("pipelined")
        geo = Geolocator(store, encoder, llm, config)
        t0 = time.perf_counter()
        preds = list(geo.locate(paths))
        pipelined = len(preds) / (time.perf_counter() - t0)
        llm.close()

    timings = [p.evidence.get("timings", {}) for p in preds]
    lat = {k: [1e3 * t[f"{k}_s"] for t in timings if f"{k}_s" in t] for k in ("encode", "search", "llm")}
    slowest = min(alone, key=alone.__getitem__)
    ratio = pipelined / alone[slowest]
    fallbacks = sum(p.fallback is not None for p in preds)
    errors = sum(p.error is not None for p in preds)
    print(
        f"## georag locate, {len(paths)} photos, encoder {args.arch}, "
        f"stand-in LLM {1e3 * args.llm_latency:.0f} ms, {args.in_flight} in flight"
    )
    print()
    print("| stage | alone (img/s) | p50 in pipeline (ms) | p95 in pipeline (ms) |")
    print("|---|---:|---:|---:|")
    for k in ("encode", "search", "llm"):
        print(f"| {k} | {alone[k]:.1f} | {pct(lat[k], 50):.2f} | {pct(lat[k], 95):.2f} |")
    print()
    print(
        f"pipelined: {pipelined:.1f} img/s; slowest stage alone ({slowest}): {alone[slowest]:.1f} img/s; "
        f"ratio {ratio:.2f} (target >= 0.80); {errors} errors, {fallbacks} fallbacks"
    )
    if args.json:
        payload = {"alone": alone, "pipelined": pipelined, "ratio": ratio, "latency_ms": {
            k: {"p50": pct(v, 50), "p95": pct(v, 95), "median": statistics.median(v) if v else None}
            for k, v in lat.items()}}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
