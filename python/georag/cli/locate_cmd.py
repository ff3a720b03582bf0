"""`georag locate`: predict where photos were taken (a thin layer over `georag.locate.Geolocator`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from georag.errors import GeoRagError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def expand_images(images: tuple[Path, ...], listing: Path | None) -> list[Path]:
    """Files as given, folders as their image files (sorted), plus the lines of ``--list``."""
    out: list[Path] = []
    for p in images:
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        else:
            out.append(p)
    if listing is not None:
        for line in listing.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(Path(line.strip()))
    return out


@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--list",
    "listing",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of image paths.",
)
@click.option(
    "--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="GeoStore."
)
@click.option("--encoder", required=True, help="The store's encoder: hub id or local folder (or an export).")
@click.option(
    "--backend", type=click.Choice(["torch", "onnxruntime", "tensorrt"]), default="torch", show_default=True
)
@click.option("--device", default=None, help="Encoder device (default: cpu; cuda for tensorrt).")
@click.option(
    "--llm",
    default="none",
    show_default=True,
    help="none | triton://HOST:PORT/MODEL | openai://HOST:PORT/v1?model=NAME",
)
@click.option(
    "--strategy",
    type=click.Choice(["rag", "knn", "knn-medoid", "vpr-guided"]),
    default=None,
    help="[default: rag with an LLM, else knn]",
)
@click.option(
    "--k-near", default=16, show_default=True, type=click.IntRange(min=1), help="Similar rows retrieved."
)
@click.option(
    "--k-far", default=16, show_default=True, type=click.IntRange(min=0), help="Dissimilar rows retrieved."
)
@click.option(
    "--variants",
    default=None,
    help="Prompt variants, e.g. rag:16:16,rag:5:5,zero [default: rag:K_NEAR:K_FAR].",
)
@click.option(
    "--samples", default=5, show_default=True, type=click.IntRange(min=1), help="Answers per prompt (n)."
)
@click.option("--temperature", default=0.7, show_default=True, type=click.FloatRange(min=0.0))
@click.option("--top-p", default=0.95, show_default=True, type=click.FloatRange(min=0.0, max=1.0))
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=None, type=int, help="Sampling seed, where the server honours one.")
@click.option(
    "--with-neighbors", is_flag=True, help="Weigh the similar neighbours into the medoid of the answers."
)
@click.option(
    "--max-in-flight", default=16, show_default=True, type=click.IntRange(min=1), help="LLM requests at once."
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds per LLM attempt.",
)
@click.option(
    "--retries", default=2, show_default=True, type=click.IntRange(min=0), help="Retries of transient errors."
)
@click.option(
    "--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Encoder batch."
)
@click.option(
    "--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Decode threads (0: all)."
)
@click.option(
    "--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Benchmark metadata (true location, author) for the --exclude-* options.",
)  # fmt: skip
@click.option(
    "--truth-format", default="im2gps3k", show_default=True, help="Reader of --truth (see index build)."
)
@click.option(
    "--exclude-same-author", is_flag=True, help="Never retrieve gallery rows by the photo's author."
)
@click.option(
    "--exclude-radius-km", type=click.FloatRange(min=0.0), default=None,
    help="Never retrieve gallery rows within R km of the photo's true location (leakage-free ablation).",
)  # fmt: skip
@click.option(
    "--prior-samples", default=5, show_default=True, type=click.IntRange(min=1),
    help="vpr-guided: samples of the prior request (they vote on the country and coordinates).",
)  # fmt: skip
@click.option(
    "--submap-by", default="country", show_default=True,
    help="vpr-guided: the store's submap partition to search in: country, or a k-means one (kmeans100).",
)  # fmt: skip
@click.option(
    "--clusters", default=1, show_default=True, type=click.IntRange(min=1),
    help="vpr-guided, k-means partition: search the N clusters nearest to the prior.",
)  # fmt: skip
@click.option(
    "--min-submap-rows", default=100, show_default=True, type=click.IntRange(min=1),
    help="vpr-guided: a smaller submap falls back to the global search.",
)  # fmt: skip
@click.option(
    "--rerank-k", default=16, show_default=True, type=click.IntRange(min=1),
    help="vpr-guided: visual candidates re-ranked by distance to the prior.",
)  # fmt: skip
@click.option(
    "--prior-weight", default=0.5, show_default=True, type=click.FloatRange(min=0.0, max=1.0),
    help="vpr-guided: w of score = (1-w)*cos - w*km/20037.5 (0: retrieval order, 1: nearest to the prior).",
)  # fmt: skip
@click.option(
    "--hybrid", is_flag=True,
    help="vpr-guided: the re-ranked candidates become the RAG prompt's similar set; the RAG route answers.",
)  # fmt: skip
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="preds.csv (+ preds.jsonl)."
)
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming an earlier run into --out.")
def locate(images: tuple[Path, ...], listing: Path | None, **kw: Any) -> None:
    """Predict where each photo was taken; re-running the same command resumes an interrupted run.

    Writes OUT.csv (id, lat, lon, confidence, strategy, error, fallback) and OUT.jsonl (the evidence:
    neighbours, prompt variants, raw answers, candidates, fallback reason, timings per stage).

    --strategy vpr-guided: the LLM first names the country and a coordinate guess (--prior-samples vote),
    the search runs only over that submap of the store (--submap-by), and the top --rerank-k candidates
    are re-ranked by distance to the guess (--prior-weight); --hybrid then asks the RAG prompt with them.
    """
    paths = expand_images(images, listing)
    if not paths:
        raise click.UsageError("no images: pass files or folders, or --list FILE")
    try:
        summary = run_locate(paths, **kw)
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted: finished photos are kept; re-run the same command to resume"
        ) from None
    except (GeoRagError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary)


def run_locate(
    paths: list[Path],
    *,
    store: Path,
    encoder: str,
    backend: str,
    device: str | None,
    llm: str,
    strategy: str | None,
    k_near: int,
    k_far: int,
    variants: str | None,
    samples: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int | None,
    with_neighbors: bool,
    max_in_flight: int,
    timeout: float,
    retries: int,
    batch_size: int,
    workers: int,
    out: Path,
    overwrite: bool,
    truth: Path | None = None,
    truth_format: str = "im2gps3k",
    exclude_same_author: bool = False,
    exclude_radius_km: float | None = None,
    prior_samples: int = 5,
    submap_by: str = "country",
    clusters: int = 1,
    min_submap_rows: int = 100,
    rerank_k: int = 16,
    prior_weight: float = 0.5,
    hybrid: bool = False,
    progress: bool = True,
) -> str:
    """Runs the CLI's job; returns the summary line."""
    from tqdm.auto import tqdm

    from georag.config import ExclusionConfig, RagConfig, Sampling, VprConfig, parse_variants
    from georag.encoder import load_encoder
    from georag.llm.backends import open_llm
    from georag.locate.geolocator import Geolocator, LocateConfig, default_variants, unique_paths
    from georag.locate.output import PredictionWriter, run_settings
    from georag.locate.truth import load_truth
    from georag.store.store import GeoStore

    if hybrid and strategy != "vpr-guided":
        raise GeoRagError("--hybrid is an option of --strategy vpr-guided")
    client = open_llm(llm, timeout_s=timeout, retries=retries, max_in_flight=max_in_flight)
    config = LocateConfig(
        strategy=strategy or ("rag" if client is not None else "knn"),
        k_near=k_near,
        k_far=k_far,
        rag=RagConfig(
            variants=parse_variants(variants) if variants else default_variants(k_near, k_far),
            sampling=Sampling(
                n=samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed
            ),
            with_neighbors=with_neighbors,
        ),
        max_in_flight=max_in_flight,
        exclusion=ExclusionConfig(same_author=exclude_same_author, radius_km=exclude_radius_km),
        vpr=VprConfig(
            submap_by=submap_by,
            clusters=clusters,
            min_submap_rows=min_submap_rows,
            rerank_k=rerank_k,
            prior_weight=prior_weight,
            sampling=Sampling(
                n=prior_samples, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed
            ),
            hybrid=hybrid,
        ),
    )
    truths = load_truth(truth, truth_format) if truth is not None else None
    settings = run_settings(
        config, llm=client.name if client is not None else "none", store=store, encoder=encoder
    )
    paths = unique_paths(paths)  # before the lock: two files with one name are refused up front
    writer = PredictionWriter.open(out, settings, overwrite=overwrite)
    csv_path, jsonl_path = writer.csv_path, writer.jsonl_path
    t0 = time.perf_counter()
    counts = {"ok": 0, "error": 0, "fallback": 0}
    finished = {p.id for p in writer.done}
    todo = [p for p in paths if p.name not in finished]
    try:
        enc = load_encoder(encoder, backend, device=device, batch_size=batch_size, workers=workers)
        geo = Geolocator(GeoStore.open(store, encoder=enc.model_id), enc, client, config, truth=truths)
        t0 = time.perf_counter()
        with tqdm(
            total=len(paths), initial=len(paths) - len(todo), unit="img", disable=not progress, desc="locate"
        ) as bar:
            for pred in geo.locate(todo):
                writer.write(pred)
                counts["error" if pred.error else "fallback" if pred.fallback else "ok"] += 1
                bar.update(1)
                bar.set_postfix(errors=counts["error"], fallbacks=counts["fallback"])
    finally:
        writer.close()
        if client is not None:
            client.close()
    secs = time.perf_counter() - t0
    rate = len(todo) / secs if secs > 0 else 0.0
    fell_back_to = "the global search" if config.strategy == "vpr-guided" else "retrieval"
    resumed = f" (resumed: {len(paths) - len(todo)} already done)" if len(todo) < len(paths) else ""
    return (
        f"located {len(todo)} photos in {secs:.1f} s ({rate:.1f}/s) with {config.strategy}{resumed}: "
        f"{counts['ok']} ok, {counts['fallback']} fell back to {fell_back_to}, {counts['error']} failed; "
        f"wrote {csv_path} and {jsonl_path}"
    )
