"""The locate job as a library call: photos in, a resumable predictions file out (what `georag locate` runs).

::

    from georag.config import load_config
    from georag.locate import run

    summary = run(paths, load_config("run.toml"), out=Path("preds.csv"))
    print(summary)          # located 50 photos in 3.1 s (16.1/s) with rag: 50 ok, ...
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from georag.config import Config
from georag.errors import ConfigError
from georag.progress import progress as progress_display

if TYPE_CHECKING:
    from georag.locate.geolocator import Geolocator
    from georag.locate.output import PredictionWriter


@dataclass(frozen=True)
class LocateSummary:
    """What one run did: counts, time and the files written."""

    located: int
    """Photos located by this run (without those an earlier run had finished)."""
    resumed: int
    """Photos an earlier run into the same files had finished (skipped)."""
    ok: int
    """Predictions without an error or a fallback."""
    fallback: int
    """Predictions that fell back (retrieval for rag, the global search for vpr-guided)."""
    error: int
    """Photos without a prediction (an error row each)."""
    seconds: float
    """Wall time of the locating (the models' loading excluded)."""
    strategy: str
    """The route."""
    csv_path: Path
    """The predictions CSV."""
    jsonl_path: Path
    """The evidence JSONL beside it."""
    geojson_path: Path | None = None
    """The GeoJSON FeatureCollection written at the end of the run, if one was asked for."""

    @property
    def rate(self) -> float:
        """Photos per second."""
        return self.located / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        fell_back_to = "the global search" if self.strategy == "vpr-guided" else "retrieval"
        resumed = f" (resumed: {self.resumed} already done)" if self.resumed else ""
        return (
            f"located {self.located} photos in {self.seconds:.1f} s ({self.rate:.1f}/s) with {self.strategy}"
            f"{resumed}: {self.ok} ok, {self.fallback} fell back to {fell_back_to}, {self.error} failed; "
            f"wrote {self.csv_path}{',' if self.geojson_path else ' and'} {self.jsonl_path}"
            + (f" and {self.geojson_path}" if self.geojson_path else "")
        )


def run(
    paths: Sequence[str | Path],
    config: Config,
    *,
    out: str | Path,
    overwrite: bool = False,
    truth: str | Path | None = None,
    truth_format: str = "im2gps3k",
    progress: bool = True,
    id_from: str = "name",
    out_format: str | None = None,
    geojson_evidence: bool = False,
) -> LocateSummary:
    """Locates ``paths`` with ``config`` into ``out`` (``preds.csv``, with ``preds.jsonl`` beside it).

    GeoJSON: where ``out`` ends with .geojson, or ``out_format`` is "geojson", the CSV and the JSONL are
    written as always (same stem) and, once every photo is done, the GeoJSON FeatureCollection of the JSONL
    (`georag.locate.output.write_geojson`; ``geojson_evidence``: the LLM candidates and neighbours too).
    A run that stops early writes none; re-running it resumes, then writes it.

    Re-running into the same ``out`` resumes: finished photos are skipped, and settings other than the
    first run's are refused (`georag.locate.output.run_settings`); ``overwrite`` starts over. ``truth``
    (read as ``truth_format``) gives the photos' true location and author, which ``config.exclusion``
    needs. The encoder is ``config.encoder.model``, or the store's own where that is empty. ``id_from``:
    a photo's id is its file name (``"name"``, default; two files of one name are refused) or its path
    relative to the photos' common folder (``"path"``, `georag.locate.geolocator.photo_ids`).

    Before any photo, a route that asks an LLM checks it (the client's ``check``: the server answers and
    serves the model): `georag.llm.backends.LLMCheckError` otherwise. During the run, more photos whose
    every LLM request failed than ``config.llm.max_failures`` (default 0; -1: never) stop it with
    `georag.locate.budget.LLMFailureBudgetError`, the photos written so far kept (re-run to resume).
    Raises GeoRagError (ConfigError for impossible settings), OSError; KeyboardInterrupt stops the run with
    the finished photos kept.
    """
    from georag.distributed.sharded_store import open_store
    from georag.encoder import load_encoder_from
    from georag.llm.backends import check_llm, open_llm_from
    from georag.locate.geolocator import Geolocator, photo_ids
    from georag.locate.output import PredictionWriter, geojson_path, output_paths, run_settings, write_geojson
    from georag.locate.truth import load_truth

    if not config.store:
        raise ConfigError("no store: give one (--store, or store in the config file)")
    if config.strategy.vpr.hybrid and config.strategy.name != "vpr-guided":
        raise ConfigError("--hybrid is an option of --strategy vpr-guided")
    out = Path(out)
    truth = None if truth is None else Path(truth)
    csv_path, jsonl_path = output_paths(out)
    geojson = geojson_path(out, out_format)
    # Before the lock: with ids from names, two files of one name are refused.
    photos, ids = photo_ids(paths, id_from)
    client = open_llm_from(config.llm)
    try:
        if client is not None and config.strategy.needs_llm:
            check_llm(client)  # an unreachable server or unknown model: one clear error, before any photo
        store = open_store(
            config.store, ray=config.search.ray, shards=config.search.shards, index=config.search.index
        )
        model = config.encoder.model or store.encoder
        truths = load_truth(truth, truth_format) if truth is not None else None
        llm = client.name if client is not None else "none"
        # The encoder must be the store's own (checked when it loads), however it was named: a local
        # folder and the hub id it holds resume alike.
        settings = run_settings(config, llm=llm, store=store.path, encoder=store.encoder)
        if id_from != "name":  # recorded only when not the default, so earlier runs still resume
            settings["id_from"] = id_from
        with PredictionWriter.open(out, settings, overwrite=overwrite) as writer:
            finished = {p.id for p in writer.done}
            todo = [(p, i) for p, i in zip(photos, ids, strict=True) if i not in finished]
            encoder = load_encoder_from(config.encoder, model)
            geo = Geolocator(store, encoder, client, config, truth=truths)
            t0 = time.perf_counter()
            counts = _write(
                geo, todo, writer, total=len(photos), progress=progress, max_failures=config.llm.max_failures
            )
            seconds = time.perf_counter() - t0
        if geojson is not None:  # from the JSONL, closed and complete: the earlier runs' photos too
            write_geojson(jsonl_path, geojson, evidence=geojson_evidence)
    finally:
        if client is not None:
            client.close()
    return LocateSummary(
        located=len(todo),
        resumed=len(photos) - len(todo),
        seconds=seconds,
        strategy=config.strategy.name,
        csv_path=csv_path,
        jsonl_path=jsonl_path,
        geojson_path=geojson,
        **counts,
    )


def _write(
    geo: Geolocator,
    todo: list[tuple[Path, str]],
    writer: PredictionWriter,
    *,
    total: int,
    progress: bool,
    max_failures: int,
) -> dict[str, int]:
    """Locates ``todo`` (path, id) into ``writer`` (progress over ``total`` photos); the counts of
    outcomes. LLMFailureBudgetError once the budget is spent (what was written stays)."""
    counts = {"ok": 0, "error": 0, "fallback": 0}
    done = total - len(todo)
    paths, ids = [p for p, _ in todo], [i for _, i in todo]
    with progress_display(total, desc="locate", noun="photos", initial=done, enabled=progress) as bar:
        for pred in geo.locate(paths, ids=ids, max_failures=max_failures):
            writer.write(pred)
            counts["error" if pred.error else "fallback" if pred.fallback else "ok"] += 1
            bar.set_postfix(failed=counts["error"], fallbacks=counts["fallback"])
            bar.update(1)
    return counts
