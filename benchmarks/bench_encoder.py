#!/usr/bin/env python
"""SigLIP encoder throughput (images/s) on the shared im2gps3k JPEGs: torch vs onnxruntime.

The model has the REAL google/siglip-base-patch16-224 vision architecture (hidden 768, 12 layers,
12 heads, MLP 3072, 224 px, patch 16) with seeded random weights: nothing is downloaded, and speed
does not depend on the weight values. For each backend and batch size B it times (median of repeats,
after one untimed warm-up):

  (a) decode + preprocess alone (iter_batches over the JPEG paths);
  (b) the encoder alone on pre-decoded (n, 3, 224, 224) float32 tensors, in the same micro-batches
      Encoder.encode uses (8 images per backend call on a CPU);
  (c) the whole Encoder.encode (decode + preprocess + embed, decoding overlapped in threads).

and reports whole / encoder-alone at B=32 (target <= 1.15) and onnxruntime / torch throughput.
--quick shrinks everything (2 layers, 16 images, B in 1/8, 1 repeat) to check that the script runs;
its numbers are not the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from timing import log, median_s

REPO = Path(__file__).resolve().parents[1]
IMAGES = Path("..") / "shared" / "data" / "im2gps3k" / "images"  # relative to the repo root
BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


def build_model(folder: Path, layers: int) -> Path:
    import torch
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**{**BASE, "num_hidden_layers": layers}, image_size=224, patch_size=16)
    torch.manual_seed(0)
    SiglipVisionModel(config).eval().save_pretrained(folder, safe_serialization=True)
    SiglipImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=REPO / IMAGES, help="JPEG folder (default: %(default)s)")
    ap.add_argument("--n", type=int, default=128, help="images per measurement (default 128)")
    ap.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    ap.add_argument("--workers", type=int, default=0, help="decode threads (0 = all cores)")
    ap.add_argument(
        "--quick", action="store_true", help="tiny smoke run: 2 layers, 16 images, B 1/8, 1 repeat"
    )
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    if not args.images.is_dir():
        print(
            f"image folder {args.images} not found: put the im2gps3k JPEGs there or pass --images",
            file=sys.stderr,
        )
        return 2
    from georag.encoder import Encoder, ProcessorSpec, export_onnx
    from georag.encoder.backends import OnnxBackend, TorchBackend
    from georag.encoder.batches import iter_batches
    from georag.encoder.model import load_vision_model, resolve_model

    layers, n, repeats = 12, args.n, args.repeats
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        layers, n, repeats, batch_sizes = 2, 16, 1, [1, 8]
    paths = sorted(args.images.glob("*.jpg"))[:n]
    if not paths:
        print(f"no .jpg files in {args.images}", file=sys.stderr)
        return 2
    n = len(paths)

    tmp = tempfile.TemporaryDirectory(prefix="bench-encoder-")
    folder = build_model(Path(tmp.name) / "siglip-base-arch", layers)
    log(f"exporting the {layers}-layer model to ONNX ...")
    onnx_path = export_onnx(folder, Path(tmp.name) / "onnx")
    spec = ProcessorSpec.from_pretrained(folder)
    backends: dict[str, Any] = {
        "torch": TorchBackend(load_vision_model(resolve_model(folder))),
        "onnxruntime": OnnxBackend(onnx_path),
    }
    threads = __import__("torch").get_num_threads()

    rows: list[dict[str, Any]] = []
    for b in batch_sizes:
        decoded: list[np.ndarray] = []

        def decode(b: int = b, out: list[np.ndarray] = decoded) -> None:
            out.clear()
            out.extend(batch.pixels for batch in iter_batches(paths, spec, b, workers=args.workers))

        t_decode = median_s(decode, repeats)
        for name, backend in backends.items():
            log(f"B={b} {name} ...")
            encoder = Encoder(backend, spec, model_id=name, batch_size=b, workers=args.workers)

            def embed_all(
                backend: Any = backend, decoded: list[np.ndarray] = decoded, m: int = encoder.micro_batch
            ) -> None:
                # The same backend calls Encoder.encode makes: micro-batches of at most m images.
                for px in decoded:
                    for start in range(0, len(px), m):
                        backend.embed(px[start : start + m])

            def encode_all(encoder: Encoder = encoder) -> None:
                res = encoder.encode(paths)
                assert len(res) == n, res

            t_embed = median_s(embed_all, repeats)
            t_whole = median_s(encode_all, repeats)
            rows.append(
                {
                    "backend": name,
                    "batch": b,
                    "decode_ips": n / t_decode,
                    "encoder_ips": n / t_embed,
                    "whole_ips": n / t_whole,
                    "whole_over_encoder": t_whole / t_embed,
                }
            )

    print(
        f"SigLIP base-patch16-224 architecture ({layers} layers, random weights), {n} JPEGs, "
        f"{os.cpu_count()} cores, torch threads {threads}, {platform.processor() or platform.machine()}"
        + (" -- QUICK SMOKE RUN, not the benchmark" if args.quick else "")
    )
    print()
    print(
        "| backend | B | decode+preprocess img/s | encoder alone img/s | whole encode img/s | whole/encoder |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['backend']} | {r['batch']} | {r['decode_ips']:.1f} | {r['encoder_ips']:.1f} | "
            f"{r['whole_ips']:.1f} | {r['whole_over_encoder']:.3f} |"
        )
    print()
    top = max(batch_sizes)
    by = {(r["backend"], r["batch"]): r for r in rows}
    for name in backends:
        ratio = by[(name, top)]["whole_over_encoder"]
        verdict = "meets" if ratio <= 1.15 else "MISSES"
        print(f"- {name}, B={top}: whole / encoder-alone time = {ratio:.3f} ({verdict} the <= 1.15 target)")
    for b in batch_sizes:
        speedup = by[("onnxruntime", b)]["encoder_ips"] / by[("torch", b)]["encoder_ips"]
        print(f"- B={b}: onnxruntime / torch encoder throughput = {speedup:.2f}x")
    if args.json:
        meta = {
            "layers": layers,
            "images": n,
            "cores": os.cpu_count(),
            "quick": args.quick,
            "repeats": repeats,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        log(f"wrote {args.json}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
