"""`georag index ...`: build, extend, index, partition, describe and verify a GeoStore."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from georag.cli.options import ENCODER, config_from, errors, use

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def index() -> None:
    """GeoStore: the geotagged embedding database that retrieval searches."""


def _source_options(fn: F) -> F:
    """Options shared by `build` and `add`: what to read and how to embed it."""
    from georag.datasets import FORMATS

    options = [
        click.option("--dataset", required=True, type=click.Choice(FORMATS), help="Metadata format."),
        click.option(
            "--metadata",
            required=True,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="The dataset's metadata file (CSV, or Parquet for generic).",
        ),
        click.option(
            "--images",
            multiple=True,
            type=click.Path(exists=True, path_type=Path),
            help="Image folder, or WebDataset .tar shards (repeat, or pass a folder of .tar files).",
        ),
        click.option(
            "--from-embeddings",
            "embeddings",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Precomputed (rows, d) .npy, row i = data row i of --metadata (instead of --images); "
            "--encoder names the model that made them.",
        ),
        click.option(
            "--source", default=None, help="Name of this source in the store [default: the format]."
        ),
        click.option("--id-col", default=None, help="Image id column (generic format, or an override)."),
        click.option("--lat-col", default=None, help="Latitude column."),
        click.option("--lon-col", default=None, help="Longitude column."),
        click.option("--author-col", default=None, help="Author / uploader column."),
        click.option("--country-col", default=None, help="Country column (code or name)."),
        click.option("--image-name", default=None, help='Image file name from the id, e.g. "{id}.jpg".'),
        click.option(
            "--keep-zero",
            is_flag=True,
            help="Keep rows at exactly (0, 0) (by default they are rejected as 'unknown location').",
        ),
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value="local",
            default=None,
            metavar="[ADDRESS]",
            help="Decode and encode on a Ray cluster (its head's host:port; no value: one started here for "
            "the build); this process still commits every shard. Needs the extra ray (pip install '.[ray]').",
        ),
        click.option(
            "--ray-encoders",
            type=click.IntRange(min=1),
            default=None,
            help="Encoder actors on Ray [default: one per GPU of the cluster, else 1].",
        ),
    ]
    fn = use("config", *ENCODER, default_text={"encoder": "the store's, when it exists"})(fn)
    for option in reversed(options):
        fn = option(fn)
    return fn


@index.command("build")
@_source_options
@click.option(
    "--out", "store", required=True, type=click.Path(file_okay=False, path_type=Path), help="Store dir."
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default=None,
    help="On-disk embeddings of a new store [default: float16].",
)
@click.option(
    "--shard-rows",
    default=None,
    type=click.IntRange(min=1),
    help="Items per shard of a new store, the unit of resumption [default: 4096].",
)
def build(store: Path, dtype: str | None, shard_rows: int | None, **kw: Any) -> None:
    """Build a store from a dataset; re-running the same command resumes an interrupted build.

    Example: georag index build --dataset im2gps3k --metadata im2gps3k_places365.csv
    --images im2gps3k/images --encoder google/siglip-so400m-patch14-384 --out store/
    """
    _run_build(store, add=False, dtype=dtype, shard_rows=shard_rows, **kw)


@index.command("add")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_source_options
def add(store: Path, **kw: Any) -> None:
    """Add another dataset to STORE (the hybrid database); it must use the store's encoder."""
    _run_build(store, add=True, dtype=None, shard_rows=None, **kw)


def _run_build(
    store: Path,
    *,
    add: bool,
    dtype: str | None,
    shard_rows: int | None,
    dataset: str,
    metadata: Path,
    images: tuple[Path, ...],
    embeddings: Path | None,
    source: str | None,
    keep_zero: bool,
    ray_address: str | None = None,
    ray_encoders: int | None = None,
    **kw: Any,
) -> None:
    from dataclasses import replace

    from georag.store.build import BuildRequest, build_source

    if bool(images) == bool(embeddings):
        raise click.UsageError("give --images (a folder or tar shards) or --from-embeddings, one of the two")
    with errors("interrupted: every committed shard is kept; re-run the same command to resume"):
        e = config_from(kw, auto_strategy=False).encoder
        if not e.model:  # index add, or a build resumed: the store's own
            e = replace(e, model=_store_encoder(store))
        columns = _column_map(dataset, {field: kw.pop(name) for name, field in _COLUMNS.items()})
        req = BuildRequest(
            store=store,
            dataset=dataset,
            metadata=metadata,
            encoder=e.model,
            images=tuple(images),
            embeddings=embeddings,
            source=source,
            columns=columns,
            dtype=dtype,
            shard_rows=shard_rows,
            zero_is_unknown=not keep_zero,
        )

        def load() -> Any:
            from georag.encoder import load_encoder_from

            return load_encoder_from(e)

        if ray_address is not None:
            from georag.distributed.ray_build import RayBuildOptions, build_source_ray

            address = None if ray_address == "local" else ray_address
            options = RayBuildOptions(address=address, encoders=ray_encoders)
            report = build_source_ray(req, add=add, encoder=e, options=options, progress=True)
        else:
            report = build_source(req, add=add, encoder_factory=load, progress=True)
    if report.already_complete:
        click.echo(f"{report.source}: already complete in {store} ({report.store_rows} rows); nothing to do")
        return
    resumed = f", resumed at item {report.resumed_at}" if report.resumed_at else ""
    rejected = sum(report.rejected.values())
    click.echo(
        f"{report.source}: added {report.added_rows} rows in {report.seconds:.1f} s{resumed}; "
        f"{report.failed} failed, {rejected} rejected by the reader; the store has {report.store_rows} rows"
    )
    if report.failed or rejected:
        click.echo(f"failures and rejections are listed in {store}/shards/*.failures.jsonl, {store}/sources/")


def _store_encoder(store: Path) -> str:
    """The encoder ``store`` was built with; UsageError for a store not yet begun."""
    from georag.store.manifest import MANIFEST, Manifest

    if not (store / MANIFEST).is_file():
        raise click.UsageError("missing --encoder (or [encoder] model in the --config file) for a new store")
    return Manifest.load(store).encoder


_COLUMNS = {
    "id_col": "image_id", "lat_col": "lat", "lon_col": "lon", "author_col": "author",
    "country_col": "country", "image_name": "image_name",
}  # fmt: skip
"""The column options of `build` / `add` -> the `georag.datasets.ColumnMap` fields they set."""


def _column_map(dataset: str, given: dict[str, str | None]) -> Any:
    """The column map of ``dataset`` with the ``given`` fields (None: the format's) replaced."""
    from dataclasses import replace

    from georag.datasets import ColumnMap, default_columns

    overrides = {k: v for k, v in given.items() if v is not None}
    if dataset == "generic":
        missing = [
            f"--{k.replace('image_id', 'id').replace('_', '-')}-col"
            for k in ("image_id", "lat", "lon")
            if k not in overrides
        ]
        if missing:
            raise click.UsageError(f"--dataset generic needs {', '.join(missing)}")
        return ColumnMap(**overrides)
    if not overrides:
        return None
    return replace(default_columns(dataset), **overrides)


@index.command("build-ann")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--factory", required=True, help='faiss index_factory string, e.g. "IVF4096,Flat" or "HNSW32".')
@click.option("--name", default=None, help="Index name [default: the factory, made filename-safe].")
@click.option(
    "--train-size",
    default=None,
    type=click.IntRange(min=1),
    help="Training rows [default: max(50 x nlist, 20000), at most all rows].",
)
@click.option("--seed", default=1234, show_default=True, type=int)
def build_ann_cmd(store: Path, factory: str, name: str | None, train_size: int | None, seed: int) -> None:
    """Build a faiss index over every row of STORE (inner product on the normalized embeddings)."""
    from georag.store.ann import build_ann
    from georag.store.store import GeoStore

    with errors():
        info = build_ann(GeoStore.open(store), factory, name=name, train_size=train_size, seed=seed)
    click.echo(f"built {info.file} ({info.factory}) over {info.rows} rows")


@index.command("submaps")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--by", type=click.Choice(["country", "kmeans"]), required=True, help="Partition scheme.")
@click.option("--k", default=100, show_default=True, type=click.IntRange(min=1), help="Clusters (kmeans).")
@click.option("--name", default=None, help='Partition name [default: "country" or "kmeans<K>"].')
@click.option("--seed", default=1234, show_default=True, type=int, help="k-means seed.")
@click.option(
    "--reorder",
    is_flag=True,
    help="Rewrite the rows in submap order so each submap is one contiguous range (drops ANN indexes).",
)
def submaps_cmd(store: Path, by: str, k: int, name: str | None, seed: int, reorder: bool) -> None:
    """Partition STORE's rows by country (offline reverse geocoding) or k-means on the coordinates."""
    from georag.store.partition import make_submaps

    with errors():
        sub = make_submaps(store, by, k=k, seed=seed, name=name, reorder=reorder)
    sizes = sorted(sub.sizes().items(), key=lambda kv: -kv[1])
    click.echo(f"{len(sub)} submaps by {by} over {sub.num_rows} rows in {len(sub.starts)} row ranges")
    for key, n in sizes[:10]:
        click.echo(f"  {key:>8}  {n:>10} rows")
    if len(sizes) > 10:
        click.echo(f"  ... {len(sizes) - 10} more")


@index.command("info")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_cmd(store: Path, as_json: bool) -> None:
    """Counts per source and submap, dimension, encoder, sizes on disk."""
    from georag.store.inspect import store_info

    with errors():
        info = store_info(store)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    mib = {k: v / 2**20 for k, v in info["bytes"].items()}
    click.echo(f"store     {info['store']} (format {info['format_version']})")
    click.echo(f"encoder   {info['encoder']}  d={info['dim']}  {info['dtype']}")
    click.echo(f"rows      {info['rows']} in {info['shards']} shards")
    click.echo("size      " + ", ".join(f"{k} {v:.1f} MiB" for k, v in mib.items() if v))
    for s in info["sources"]:
        state = "complete" if s["complete"] else f"INCOMPLETE ({s['progress']}; re-run its build to resume)"
        rejected = sum(s["rejected"].values())
        click.echo(
            f"source    {s['name']:<12} {s['format']:<9} {s['rows']:>10} rows  {s['failed']} failed  "
            f"{rejected} rejected  {state}"
        )
    for name, sub in info["submaps"].items():
        top = ", ".join(f"{k} {v}" for k, v in list(sub.get("largest", {}).items())[:5])
        order = "contiguous" if sub["contiguous"] else f"{sub.get('ranges', '?')} ranges"
        click.echo(
            f"submaps   {name:<12} {sub['scheme']:<8} {sub['count']:>4} submaps, {order}; largest: {top}"
        )
        if "stale" in sub:
            click.echo(f"          STALE: {sub['stale']}")
    for name, a in info["ann"].items():
        click.echo(f"ann       {name:<12} {a['factory']}  {a['rows']} rows  {a['bytes'] / 2**20:.1f} MiB")


@index.command("verify")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--expect-sha256",
    metavar="HASH",
    default=None,
    help="The SHA-256 the store's manifest.json must have (one published with the store); the manifest "
    "holds the SHA-256 of every other file, so a match vouches for the whole store.",
)
def verify_cmd(store: Path, expect_sha256: str | None) -> None:
    """Check STORE completely: every file's SHA-256 and fingerprint, every manifest cross-reference, each
    shard's rows; exit status 1 when anything is wrong or a source is unfinished."""
    from georag.store.inspect import verify_store

    with errors():
        report = verify_store(store, progress=True, expect_sha256=expect_sha256)
    for line in report.problems:
        click.echo(f"CORRUPT  {line}")
    for line in report.unfinished:
        click.echo(f"UNFINISHED {line}")
    for rel in report.unlisted:
        click.echo(f"unlisted {rel} (left by an interrupted step; the next writer to the store deletes it)")
    for line in report.notes:
        click.echo(f"NOTE     {line}")
    expected = expect_sha256 is not None and report.manifest_sha256 == expect_sha256.strip().lower()
    matched = " (the expected hash)" if expected else ""
    click.echo(f"manifest.json SHA-256 {report.manifest_sha256}{matched}")
    click.echo(f"checked {report.checked} files, {report.bytes / 2**20:.1f} MiB: {report.state}")
    if not report.ok:
        raise SystemExit(1)


@index.command("set-encoder")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--encoder",
    "model",
    required=True,
    help="The encoder's new place: a model folder, or a hub id in the local Hugging Face cache.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Re-point a store that recorded no fingerprint when its old encoder cannot be found to compare.",
)
def set_encoder_cmd(store: Path, model: str, force: bool) -> None:
    """Re-point STORE at a copy of its encoder in another place (a moved or copied model folder): allowed
    only when the model files are the same as the store's encoder's (configs, weight headers and sampled
    blocks); otherwise the store's embeddings would not match the encoder's."""
    from georag.store.repoint import set_encoder

    with errors():
        manifest = set_encoder(store, model, force=force)
    click.echo(f"{store}: encoder is now {manifest.encoder} ({manifest.encoder_fingerprint})")


@index.command("near-duplicates")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@use("config", *ENCODER)
@click.option(
    "--threshold", default=0.95, show_default=True, type=click.FloatRange(-1.0, 1.0), help="Cosine bar."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the pairs as CSV here.")
def near_duplicates_cmd(
    store: Path, images: tuple[Path, ...], threshold: float, out: Path | None, **kw: Any
) -> None:
    """List gallery rows of STORE that are near-copies of benchmark IMAGES (files or folders): cosine >= bar.

    A near-copy is found at about 0 km by retrieval and inflates street-level scores; see also
    `georag locate --exclude-same-author / --exclude-radius-km`.
    """
    import csv
    from dataclasses import asdict

    from georag.cli.locate_cmd import expand_images
    from georag.encoder import load_encoder_from
    from georag.store.duplicates import near_duplicates
    from georag.store.store import GeoStore, check_encoder

    with errors():
        e = config_from(kw, auto_strategy=False).encoder
        gallery = GeoStore.open(store)
        enc = load_encoder_from(e, gallery.encoder)
        check_encoder(gallery, enc.model_id, enc.dim)
        paths = expand_images(images, None)
        result = enc.encode(paths, ids=[p.name for p in paths], progress=True)
        pairs = near_duplicates(gallery, result.embeddings, list(result.ids), threshold)
    queries = {p.query for p in pairs}
    click.echo(
        f"{len(queries)} of {len(result)} photos have a gallery row at cosine >= {threshold:g} "
        f"({len(pairs)} pairs); {len(result.failures)} photos could not be read"
    )
    for p in pairs[:10]:
        click.echo(
            f"  {p.query}  ~  row {p.row} {p.image_id} ({p.source}, author {p.author})  cos {p.cosine:.4f}"
        )
    if out is not None:
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, ["query", "row", "image_id", "source", "author", "cosine"])
            w.writeheader()
            w.writerows(asdict(p) for p in pairs)
        click.echo(f"wrote {out}")
