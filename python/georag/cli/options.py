"""The options the `georag` commands share: one name per meaning, every default the configuration's.

An option that sets the configuration maps to dotted keys of `georag.config.Config` (``--k-near`` ->
``search.k_near``). Its click default is None, meaning "not given": `config_from` then keeps what the
``--config FILE.toml`` says, or the documented default, which ``--help`` shows (`georag.config.describe`).
A command takes the options it needs by name, in the order its ``--help`` lists them::

    @click.command()
    @use("config", "store", *ENCODER, *LLM)
    def cmd(**kw): config = config_from(kw)

Order of precedence: an option given on the command line, then the file, then the default. Prompt
variants that neither gives follow the retrieval depth (``rag:K_NEAR:K_FAR``), and without a strategy
named anywhere the route is rag with an LLM and knn without one.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from georag.config import STRATEGY_NAMES, Config, describe, load_config, read_config_file
from georag.errors import GeoRagError
from georag.evaluate.scoring import DENOMINATOR_HELP, DENOMINATORS
from georag.geo.selection import SELECTION_RULES
from georag.llm.chat_templates import known_families

F = TypeVar("F", bound=Callable[..., Any])

VARIANTS = "strategy.rag.variants"
STRATEGY = "strategy.name"


class FiniteFloat(click.FloatRange):
    """A float range that refuses nan and inf too (click's FloatRange lets nan through, and inf where the
    range has no bound on that side)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


POSITIVE = FiniteFloat(min=0.0, min_open=True)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


class SharedOption(click.Option):
    """An option made here: ``keys`` are the config keys it sets (empty for a plain one)."""

    def __init__(self, *args: Any, keys: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.keys = keys


@dataclass(frozen=True)
class Shared:
    """One shared option: its flags, the config keys it sets (none: a plain option) and its help."""

    flags: str
    """The declaration as click takes it: ``--k-near`` or ``--hybrid/--no-hybrid``."""
    keys: tuple[str, ...]
    """The dotted config keys it sets (several: one value for each); empty for an option outside the
    configuration."""
    type: Any
    help: str
    default_text: str | None = None
    """What ``--help`` says the default is, where `describe` of the key does not say it well."""
    param: str | None = None
    """The parameter name, where it is not the flag's (two options of one name setting other keys)."""

    @property
    def name(self) -> str:
        """The command function's parameter."""
        return self.param or self.flags.split("/")[0].lstrip("-").replace("-", "_")

    def option(self, *, required: bool = False, default: Any = None, default_text: str | None = None) -> Any:
        """The click option (plain options may be required or take a default; config ones never do)."""
        shown = default_text or self.default_text
        if shown is None:
            shown = describe(self.keys[0]) if self.keys else None if default is None else str(default)
        text = f"{self.help} [default: {shown}]" if shown and not required else self.help
        flags = [self.flags] if self.param is None else [self.flags, self.param]
        is_flag = "/" in self.flags
        return click.option(
            *flags,
            type=None if is_flag else self.type,
            default=default,
            required=required,
            help=text,
            cls=SharedOption,
            keys=self.keys,
            **({"is_flag": True} if is_flag else {}),
        )


def _s(flags: str, keys: str | tuple[str, ...], type: Any, help: str, **kw: Any) -> Shared:
    return Shared(flags, (keys,) if isinstance(keys, str) else keys, type, help, **kw)


_RAG, _VPR = "strategy.rag.sampling", "strategy.vpr.sampling"
SHARED: dict[str, Shared] = {
    s.flags.split("/")[0].lstrip("-") if s.param is None else s.param.replace("_", "-"): s
    for s in (
        _s("--config", (), _FILE, "Settings from this TOML file (keys as in georag.config); options win."),
        _s("--store", "store", _DIR, "The GeoStore folder (georag index build); here or in --config."),
        # the encoder
        _s("--encoder", "encoder.model", str, "The store's encoder: hub id or folder (or an export).",
           default_text="the encoder the store was built with"),
        _s("--backend", "encoder.backend", click.Choice(["torch", "onnxruntime", "tensorrt"]),
           "Encoder backend (onnxruntime / tensorrt take an exported folder)."),
        _s("--device", "encoder.device", str, "Encoder device.", default_text="cpu; cuda for tensorrt"),
        _s("--batch-size", "encoder.batch_size", click.IntRange(min=1), "Photos encoded per call."),
        _s("--workers", "encoder.workers", click.IntRange(min=0), "Decode threads (0: every core)."),
        # the LLM
        _s("--llm", "llm.url", str, "none | triton://HOST:PORT/MODEL | openai://HOST:PORT/v1?model=NAME."),
        _s("--llm-timeout-s", "llm.timeout_s", POSITIVE, "Time limit of each LLM request attempt, seconds."),
        _s("--llm-timeout-s", "serve.llm_timeout_s", POSITIVE, "Time limit of each LLM request, seconds; "
           "sent once (no retries: the caller gets the 504 / 502 and may retry).",
           param="served_llm_timeout_s"),
        _s("--llm-retries", "llm.retries", click.IntRange(min=0), "Retries of transient LLM errors."),
        _s("--llm-concurrency", "llm.concurrency", click.IntRange(min=1), "LLM requests open at once."),
        _s("--llm-max-failures", "llm.max_failures", click.IntRange(min=-1),
           "Photos whose every LLM request failed that may fall back to retrieval before the run stops "
           "(0: the first stops it; -1: never stop, always fall back)."),
        _s("--family", (), click.Choice(known_families()),
           "Chat format of a triton:// LLM whose URL names no ?family= (openai:// servers apply their own)."),
        # retrieval
        _s("--k-near", "search.k_near", click.IntRange(min=1), "Similar rows retrieved per photo."),
        _s("--k-far", "search.k_far", click.IntRange(min=0), "Dissimilar rows retrieved per photo."),
        _s("--index", "search.index", str, "Index searched: exact (C++ core, CPU), cuda (a GPU) or the name "
           "of a faiss index of the store (georag index build-ann)."),
        _s("--shards", "search.shards", click.IntRange(min=0), "Split the exact search over this many Ray "
           "actors, each holding a range of the store's rows (0: one process; exact either way)."),
        _s("--ray", "search.ray", str, "The Ray cluster of --shards: its head's address, or local (one "
           "started here). Needs the extra ray.", default_text="local"),
        # the route
        _s("--strategy", STRATEGY, click.Choice(STRATEGY_NAMES), "The route.",
           default_text="rag with an LLM, else knn"),
        _s("--knn-k", "strategy.knn_k", click.IntRange(min=1), "Neighbors knn-medoid takes the medoid of."),
        _s("--variants", VARIANTS, str, "Prompt variants, e.g. rag:16:16,rag:5:5,zero.",
           default_text="rag:K_NEAR:K_FAR"),
        _s("--samples", f"{_RAG}.n", click.IntRange(min=1), "Answers per prompt (n)."),
        _s("--temperature", (f"{_RAG}.temperature", f"{_VPR}.temperature"), FiniteFloat(0.0, 2.0),
           "Sampling temperature."),
        _s("--top-p", (f"{_RAG}.top_p", f"{_VPR}.top_p"), FiniteFloat(0.0, 1.0), "Sampling top-p."),
        _s("--max-tokens", (f"{_RAG}.max_tokens", f"{_VPR}.max_tokens"), click.IntRange(min=1),
           "Answer length cap."),
        _s("--seed", (f"{_RAG}.seed", f"{_VPR}.seed"), int, "Sampling seed, where the server honours one."),
        _s("--with-neighbors/--no-with-neighbors", "strategy.rag.with_neighbors", bool,
           "Weigh the similar neighbors into the medoid (or geometric median) of the answers."),
        _s("--select", "strategy.rag.select", click.Choice(SELECTION_RULES),
           "Rule choosing among the answers: medoid, geomedian (geometric median on the sphere), cluster "
           "(medoid of the densest --select-km ball), first, support (most neighbors within --select-km)."),
        _s("--select-km", "strategy.rag.select_km", FiniteFloat(min=0.0),
           "Radius of the cluster and support rules and of the reported regions, km."),
        _s("--regions", "strategy.rag.regions", click.IntRange(min=0),
           "Regions of the answers (centre, radius, share of the samples) reported per prediction."),
        _s("--calibration", "strategy.calibration", _FILE,
           "Calibration file (georag eval calibrate): confidence becomes the fitted probability of being "
           "within its distance of the truth.", default_text="none: the raw agreement"),
        # vpr-guided
        _s("--prior-samples", f"{_VPR}.n", click.IntRange(min=1),
           "vpr-guided: samples of the prior request (they vote on the country and coordinates)."),
        _s("--submap-by", "strategy.vpr.submap_by", str,
           "vpr-guided: the store's submap partition to search in: country, or a k-means one (kmeans100)."),
        _s("--clusters", "strategy.vpr.clusters", click.IntRange(min=1),
           "vpr-guided, k-means partition: search the N clusters nearest to the prior."),
        _s("--min-submap-rows", "strategy.vpr.min_submap_rows", click.IntRange(min=1),
           "vpr-guided: a smaller submap falls back to the global search."),
        _s("--rerank-k", "strategy.vpr.rerank_k", click.IntRange(min=1),
           "vpr-guided: visual candidates re-ranked by distance to the prior."),
        _s("--prior-weight", "strategy.vpr.prior_weight", FiniteFloat(0.0, 1.0),
           "vpr-guided: w of score = (1-w)*cos - w*km/20037.5 (0: retrieval order, 1: nearest the prior)."),
        _s("--hybrid/--no-hybrid", "strategy.vpr.hybrid", bool,
           "vpr-guided: the re-ranked candidates become the RAG prompt's similar set; the RAG route answers."
           ),
        # leakage control
        _s("--exclude-same-author/--no-exclude-same-author", "exclusion.same_author", bool,
           "Never retrieve gallery rows by the photo's author (needs --truth)."),
        _s("--exclude-radius-km", "exclusion.radius_km", FiniteFloat(min=0.0),
           "Never retrieve gallery rows within R km of the photo's true location (needs --truth)."),
        _s("--truth", (), _FILE, "Benchmark metadata: the photos' true location and author."),
        _s("--truth-format", (), str, "Reader of --truth: im2gps, im2gps3k, yfcc4k, mp16, osv5m or generic "
           "(columns id,lat,lon)."),
        # scoring
        _s("--distance", (), click.Choice(["haversine", "geodesic"]),
           "haversine: sphere of R = 6371.0 km (the papers); geodesic: WGS-84 ellipsoid."),
        _s("--bootstrap", (), click.IntRange(min=0), "Bootstrap resamples of the 95% intervals (0: none)."),
        _s("--denominator", (), click.Choice(DENOMINATORS), DENOMINATOR_HELP),
        # serving limits
        _s("--max-requests", "serve.max_requests", click.IntRange(min=1), "Requests run at once."),
        _s("--max-queue", "serve.max_queue", click.IntRange(min=0), "Requests whose body is in that may "
           "wait beyond --max-requests; more are answered 503 at once."),
        _s("--max-image-mb", "serve.max_image_mb", POSITIVE, "Largest image a request may carry, MiB."),
        _s("--deadline-s", "serve.deadline_s", POSITIVE, "Time limit of a whole request, waiting included."),
        # georag serve's slow-client limits (HTTP only)
        _s("--max-uploads", "serve.max_uploads", click.IntRange(min=1),
           "Request bodies read at once, from all clients; more are answered 503, unread."),
        _s("--max-uploads-per-client", "serve.max_uploads_per_client", click.IntRange(min=1),
           "Request bodies read at once from one client address once half of --max-uploads are taken; "
           "more are answered 429, unread."),
        _s("--body-timeout-s", "serve.body_timeout_s", POSITIVE,
           "Longest pause within a request body, and the grace before --min-upload-bytes-per-s (408)."),
        _s("--min-upload-bytes-per-s", "serve.min_upload_bytes_per_s", click.IntRange(min=1),
           "Slowest upload accepted, on average after its first --body-timeout-s (408)."),
        _s("--header-timeout-s", "serve.header_timeout_s", POSITIVE,
           "Time a connection has to send its request headers, from connecting or its previous answer; "
           "then it is closed."),
        _s("--max-connections-per-client", "serve.max_connections_per_client", click.IntRange(min=1),
           "Connections from one client address sending a request (headers or body) at once; one more "
           "is closed as it connects."),
    )
}  # fmt: skip
"""Every shared option by name (its first flag without dashes; ``served-llm-timeout-s`` is serve's
``--llm-timeout-s``)."""

ENCODER = ("encoder", "backend", "device", "batch-size", "workers")
LLM = ("llm", "llm-timeout-s", "llm-retries", "llm-concurrency")
SEARCH = ("k-near", "k-far", "index")
SHARDED = ("shards", "ray")
SAMPLING = ("samples", "temperature", "top-p", "max-tokens", "seed", "with-neighbors")
SELECT = ("select", "select-km", "regions")
RAG = ("strategy", "knn-k", "variants", *SAMPLING, *SELECT)
VPR = ("prior-samples", "submap-by", "clusters", "min-submap-rows", "rerank-k", "prior-weight", "hybrid")
EXCLUSION = ("exclude-same-author", "exclude-radius-km")
SERVE = ("max-requests", "max-queue", "max-image-mb", "served-llm-timeout-s", "deadline-s")
SLOW_CLIENTS = ("max-uploads", "max-uploads-per-client", "body-timeout-s", "min-upload-bytes-per-s",
                "header-timeout-s", "max-connections-per-client")
"""georag serve's limits on slow clients (the HTTP server's own; a Triton repository has none)."""
CONFIG_PARAMS = {s.name: s.keys for s in SHARED.values() if s.keys}
"""Parameter name -> the config keys it sets."""


def use(
    *names: str,
    required: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
    default_text: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """The shared options ``names``, in this order. ``required`` / ``defaults``: for plain options only
    (a config option is never required by click: the file may give it). ``default_text``: what ``--help``
    says the default is, where this command's differs."""
    defaults, default_text = defaults or {}, default_text or {}
    for name in [*required, *defaults]:
        if SHARED[name].keys:
            raise ValueError(f"--{name} sets the configuration: it takes neither required nor a default")

    def decorate(fn: F) -> F:
        for name in reversed(names):
            option = SHARED[name].option(
                required=name in required, default=defaults.get(name), default_text=default_text.get(name)
            )
            fn = option(fn)
        return fn

    return decorate


def config_from(kw: dict[str, Any], *, require: tuple[str, ...] = (), auto_strategy: bool = True) -> Config:
    """The configuration of a command: pops ``config`` and the config options from ``kw`` (the command's
    parameters) and applies those given over the file's settings over the defaults.

    Prompt variants that neither the options nor the file give are ``rag:K_NEAR:K_FAR`` of the result; with
    ``auto_strategy``, a strategy named nowhere is rag with an LLM and knn without one. ``require``: keys
    that must end up set (e.g. ``store``): click.UsageError naming the option. ConfigError (naming the file
    and the key) for a bad file or value.
    """
    path = kw.pop("config", None)
    given: dict[str, Any] = {}
    for name, keys in CONFIG_PARAMS.items():
        value = kw.pop(name, None)
        if value is not None:
            given.update(dict.fromkeys(keys, str(value) if isinstance(value, Path) else value))
    config = load_config(path, given)
    in_file = {} if path is None else read_config_file(path)
    if auto_strategy and STRATEGY not in given and STRATEGY not in in_file and not _has_llm(config):
        config = config.with_values({STRATEGY: "knn"})
    for key in require:
        if not config.get(key):
            flag = next(f"--{n}" for n, s in SHARED.items() if s.keys and s.keys[0] == key)
            raise click.UsageError(f"missing {flag} (or {key} in the --config file)")
    return config


def _has_llm(config: Config) -> bool:
    return config.llm.url.strip().lower() != "none"


@contextmanager
def errors(interrupted: str | None = None) -> Iterator[None]:
    """Maps a job's errors to the command line's: GeoRagError (ConfigError included), ValueError and
    OSError become a ClickException with their message (exit 1); Ctrl-C prints ``interrupted`` (where
    given) and exits 130, as shells expect of an interrupted program."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"Error: {interrupted}" if interrupted else "Aborted.", err=True)
        sys.exit(130)
    except (GeoRagError, ValueError, OSError) as exc:  # MissingDependencyError included
        raise click.ClickException(str(exc)) from exc
