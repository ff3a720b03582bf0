"""`georag demo`: the whole pipeline offline in about a minute, on a tiny random SigLIP and a small store.

It builds a tiny random-weight SigLIP (nothing is downloaded), a GeoStore from geotagged photos (the shared
IM2GPS3k sample when it is beside the project, the user's ``--images`` / ``--metadata``, or generated
pictures), locates held-out photos with the retrieval baseline (or the route the config names, e.g. rag
with an LLM server), writes the predictions and scores them. Random weights make the accuracy
meaningless: the demo shows the plumbing, not the method.
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from georag.config import Config
from georag.errors import ConfigError, DatasetError
from georag.progress import progress as progress_display

log = logging.getLogger(__name__)

MARKER = ".georag-demo"
SHARED = Path("shared") / "data" / "im2gps3k"


@dataclass
class DemoReport:
    """What the demo did and measured."""

    data: str
    """Where the photos came from."""
    gallery: int = 0
    """Photos in the store."""
    queries: int = 0
    """Photos located."""
    strategy: str = ""
    """The route used."""
    encoder: str = ""
    """The encoder's model id."""
    random_weights: bool = True
    """True when the tiny random SigLIP was used (the accuracy is then meaningless)."""
    accuracy: dict[float, float] = field(default_factory=dict)
    """Share of queries within each threshold (km)."""
    failed: int = 0
    """Queries without a prediction."""
    fallbacks: int = 0
    """Queries whose route fell back (e.g. rag to knn: every LLM request failed or did not parse)."""
    seconds: float = 0.0
    """Wall time."""
    predictions: Path = Path()
    """The CSV written (the JSONL with the evidence lies beside it)."""


def find_shared_data() -> tuple[Path, Path] | None:
    """(images, metadata) of the shared IM2GPS3k sample in ../shared/data, from the working directory or the
    source checkout, or None."""
    here = Path(__file__).resolve()
    for root in (Path.cwd().parent, Path.cwd(), *here.parents):
        folder = root / SHARED
        if (folder / "images").is_dir() and (folder / "im2gps3k_places365.csv").is_file():
            return folder / "images", folder / "im2gps3k_places365.csv"
    return None


def run_demo(
    out: Path,
    *,
    images: Path | None = None,
    metadata: Path | None = None,
    dataset: str = "im2gps3k",
    config: Config | None = None,
    every: int = 6,
    progress: bool = False,
) -> DemoReport:
    """Runs the demo into ``out`` (created; a previous demo folder there is replaced). Every ``every``-th
    photo is a query, the others form the store (``out/store``; ``config.store`` is not used).

    ``config``: the settings of the locate step; its ``encoder.model`` is a SigLIP hub id or folder (the
    real ``google/siglip-so400m-patch14-384`` needs a network), or "" for a tiny random one built here;
    ``llm.url`` an LLM server. Default: the defaults with the knn route (no LLM)."""
    from georag.datasets import ColumnMap, read_dataset
    from georag.encoder import load_encoder_from
    from georag.encoder.tiny import make_tiny_siglip
    from georag.evaluate import accuracy
    from georag.llm.backends import check_llm, open_llm_from
    from georag.locate.geolocator import Geolocator
    from georag.locate.output import PredictionWriter
    from georag.store.build import BuildRequest, build_source
    from georag.store.store import GeoStore

    config = (config or Config().with_values({"strategy.name": "knn"})).with_values(
        {"store": str(out / "store")}
    )
    t0 = time.perf_counter()
    client = open_llm_from(config.llm)
    if client is not None and config.strategy.needs_llm:
        try:
            check_llm(client)  # an unreachable server or unknown model: one clear error, before any work
        finally:
            client.close()
    _fresh(out)
    if (images is None) != (metadata is None):
        raise ConfigError("give both --images and --metadata, or neither")
    if images is None or metadata is None:
        shared = find_shared_data()
        if shared is not None:
            images, metadata = shared
            source = f"the shared IM2GPS3k sample ({images})"
        else:
            images, metadata = _synthetic(out / "photos", n=120)
            dataset, source = "generic", "120 generated pictures at random places"
    else:
        source = f"{images} with {metadata}"
    columns = ColumnMap(image_id="id", lat="lat", lon="lon") if dataset == "generic" else None
    records = read_dataset(metadata, dataset, columns=columns)
    names = records.table.column("image_name").to_pylist()
    lat = records.table.column("lat").to_numpy()
    lon = records.table.column("lon").to_numpy()
    have = [i for i, n in enumerate(names) if (images / n).is_file()]
    if len(have) < 2 * every:
        raise DatasetError(
            f"{images} holds only {len(have)} of the photos {metadata} lists; need {2 * every}"
        )
    query_rows = have[::every]
    queries = set(query_rows)
    gallery_rows = [i for i in have if i not in queries]
    gallery_csv = out / "gallery.csv"
    with open(gallery_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "lat", "lon"])
        w.writerows([names[i], repr(float(lat[i])), repr(float(lon[i]))] for i in gallery_rows)
    random_weights = not config.encoder.model
    model = config.encoder.model or str(make_tiny_siglip(out / "tiny-siglip"))
    enc = load_encoder_from(config.encoder, model)
    build_source(
        BuildRequest(
            store=out / "store",
            dataset="generic",
            metadata=gallery_csv,
            encoder=enc.model_id,
            images=(images,),
            columns=ColumnMap(image_id="id", lat="lat", lon="lon"),
        ),
        add=False,
        encoder_factory=lambda: enc,
        progress=progress,
    )
    client = open_llm_from(config.llm)
    try:
        geo = Geolocator(GeoStore.open(config.store, index=config.search.index), enc, client, config)
    except BaseException:
        if client is not None:
            client.close()
        raise
    preds_path = out / "predictions.csv"
    got: dict[str, tuple[float, float]] = {}
    failed = fallbacks = 0
    try:
        with (
            PredictionWriter(preds_path, [], 0) as writer,
            progress_display(len(query_rows), desc="locate", noun="photos", enabled=progress) as bar,
        ):
            for pred in geo.locate([images / names[i] for i in query_rows]):
                writer.write(pred)
                got[pred.id] = (pred.lat, pred.lon)
                failed += pred.error is not None
                fallbacks += pred.fallback is not None
                bar.set_postfix(failed=failed, fallbacks=fallbacks)
                bar.update(1)
    finally:
        if client is not None:
            client.close()
    pl = np.array([got.get(Path(names[i]).name, (np.nan, np.nan))[0] for i in query_rows])
    po = np.array([got.get(Path(names[i]).name, (np.nan, np.nan))[1] for i in query_rows])
    return DemoReport(
        data=source,
        gallery=len(gallery_rows),
        queries=len(query_rows),
        strategy=config.strategy.name,
        encoder=enc.model_id,
        random_weights=random_weights,
        accuracy=accuracy(pl, po, lat[query_rows], lon[query_rows]),
        failed=failed,
        fallbacks=fallbacks,
        seconds=time.perf_counter() - t0,
        predictions=preds_path,
    )


def _fresh(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).exists():
            raise ConfigError(f"{out} exists and is not a georag demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by `georag demo`; deleted by the next demo run into this folder\n")


def _synthetic(folder: Path, n: int) -> tuple[Path, Path]:
    """``n`` generated pictures at seeded random places: a colour gradient per place, for offline runs."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        lat, lon = float(rng.uniform(-55, 70)), float(rng.uniform(-180, 180))
        base = rng.integers(0, 256, 3)
        grad = np.linspace(0, 1, 64)[:, None, None] * rng.integers(-80, 80, 3)
        pixels = np.clip(base + grad + rng.normal(0, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
        name = f"photo{i:04d}.png"
        Image.fromarray(pixels, "RGB").save(folder / name)
        rows.append([name, f"{lat:.5f}", f"{lon:.5f}"])
    meta = folder.parent / "photos.csv"
    with open(meta, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "lat", "lon"])
        w.writerows(rows)
    return folder, meta
