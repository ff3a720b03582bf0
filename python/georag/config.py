"""The one configuration: frozen dataclasses with a documented default per field, filled by the CLI, the HTTP
server, the Triton templates and ``--config FILE.toml`` alike.

A TOML file mirrors the nesting (every key optional; an unknown key or a wrong type is a ConfigError)::

    store = "gallery.store"
    [search]
    k_near = 16
    index = "exact"          # "exact" (C++ core, CPU), "cuda", or the name of a faiss index of the store
    [strategy]
    name = "rag"
    [strategy.rag]
    variants = "rag:16:16,zero"
    [strategy.rag.sampling]
    n = 5
    [llm]
    url = "openai://127.0.0.1:8000/v1?model=Qwen/Qwen2-VL-7B-Instruct"

`Config.with_values` applies dotted overrides (``{"search.k_near": 8}``): what a command line gives wins over
the file, the file over the defaults.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georag.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

_VARIANT = re.compile(r"(rag):(\d{1,3}):(\d{1,3})|(zero)")


@dataclass(frozen=True)
class PromptVariant:
    """A prompt template with how many neighbors' coordinates it shows."""

    template: str
    """"rag" (similar + dissimilar references) or "zero" (none)."""
    k_near: int = 16
    """Similar images' coordinates shown; default 16 (the papers' k)."""
    k_far: int = 16
    """Dissimilar images' coordinates shown; default 16."""

    def __str__(self) -> str:
        return "zero" if self.template == "zero" else f"rag:{self.k_near}:{self.k_far}"


def parse_variants(text: str) -> tuple[PromptVariant, ...]:
    """Variants from ``"rag:16:16,zero"``; ConfigError naming the bad part."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        m = _VARIANT.fullmatch(part)
        if not m:
            raise ConfigError(f"prompt variant {part!r}: write rag:K_NEAR:K_FAR (e.g. rag:16:16) or zero")
        out.append(PromptVariant("zero", 0, 0) if m.group(4) else PromptVariant("rag", int(m[2]), int(m[3])))
    if not out:
        raise ConfigError("no prompt variant given")
    return tuple(out)


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters sent with an LLM request."""

    n: int = 1
    """Answers per request; default 1 (the routes ask for 5: `RagConfig`, `VprConfig`)."""
    temperature: float = 0.7
    """Default 0.7 (the G3 / Img2Loc setting for several samples)."""
    top_p: float = 0.95
    """Default 0.95."""
    max_tokens: int = 256
    """Answer length cap; default 256 (a JSON coordinate needs about 30)."""
    seed: int | None = None
    """Sampling seed where the server honours one; default None."""

    def __post_init__(self) -> None:
        _at_least(self, "n", 1)
        _at_least(self, "max_tokens", 1)
        _within(self, "temperature", 0.0, 2.0)
        _within(self, "top_p", 0.0, 1.0)


@dataclass(frozen=True)
class SearchConfig:
    """What one photo's global search retrieves, and with which index."""

    k_near: int = 16
    """Similar rows retrieved per photo; default 16 (prompt variants show at most this many)."""
    k_far: int = 16
    """Dissimilar rows retrieved per photo; default 16."""
    index: str = "exact"
    """"exact" (the C++ core on the CPU, default), "cuda" (the exact search on a GPU), or the name of a
    faiss index of the store (`georag index build-ann`)."""
    shards: int = 0
    """Search the store split into this many row ranges, each held by a Ray actor
    (`georag.distributed`); default 0: one process. The results are those of one process, exactly."""
    ray: str = ""
    """The Ray cluster of a sharded search: its head's address, or "local" for one started here; default ""
    (the same as "local")."""

    def __post_init__(self) -> None:
        _at_least(self, "k_near", 1)
        _at_least(self, "k_far", 0)
        _at_least(self, "shards", 0)
        if not self.index:
            raise ConfigError("search.index must be exact, cuda or the name of a faiss index of the store")


@dataclass(frozen=True)
class RagConfig:
    """How the rag route asks and chooses."""

    variants: tuple[PromptVariant, ...] = (PromptVariant("rag", 16, 16),)
    """Prompt variants, each one request; default one, rag:16:16."""
    sampling: Sampling = field(default_factory=lambda: Sampling(n=5))
    """Sampling per request; default 5 answers at temperature 0.7 (the candidates of the medoid)."""
    with_neighbors: bool = False
    """Also weigh the top-k similar neighbors' coordinates into the medoid or geometric median (the medoid
    is still one of the LLM's candidates); default False."""
    select: str = "medoid"
    """The selection rule among the parsed answers (`georag.geo.selection`): medoid (default: the best
    measured on 160 real GPT-4o sample sets), geomedian, cluster, first or support."""
    select_km: float = 25.0
    """Radius of the cluster and support rules and of the reported regions, km; default 25."""
    regions: int = 3
    """Regions (clusters of the answers: centre, radius, share of the samples) reported per prediction;
    default 3 (0: none)."""

    def __post_init__(self) -> None:
        from georag.geo.selection import check_rule

        if not self.variants:
            raise ConfigError("strategy.rag.variants: give at least one prompt variant")
        check_rule(self.select, with_neighbors=self.with_neighbors)
        if not (math.isfinite(self.select_km) and self.select_km >= 0):
            raise ConfigError(f"select_km must be a finite distance >= 0 km, got {self.select_km!r}")
        _at_least(self, "regions", 0)


@dataclass(frozen=True)
class VprConfig:
    """How the vpr-guided route asks for its prior, restricts the search and re-ranks."""

    submap_by: str = "country"
    """The store's submap partition to restrict to: "country" (default) or a k-means one ("kmeans100")."""
    clusters: int = 1
    """k-means partitions: how many clusters nearest to the prior are searched (their union); default 1."""
    min_submap_rows: int = 100
    """A submap with fewer rows is not trusted: the global search stands in; default 100."""
    rerank_k: int = 16
    """Visual candidates retrieved and re-ranked; default 16."""
    prior_weight: float = 0.5
    """w in [0, 1] of the re-ranking score (0: retrieval order, 1: nearest to the prior); default 0.5."""
    sampling: Sampling = field(default_factory=lambda: Sampling(n=5))
    """Sampling of the prior request; default 5 samples at temperature 0.7 (they vote)."""
    hybrid: bool = False
    """Hand the re-ranked candidates to the RAG prompt as its similar set; default False."""

    def __post_init__(self) -> None:
        if not self.submap_by:
            raise ConfigError("submap_by must name a submap partition of the store (e.g. country)")
        for name in ("clusters", "min_submap_rows", "rerank_k"):
            _at_least(self, name, 1)
        _within(self, "prior_weight", 0.0, 1.0)


STRATEGY_NAMES = ("rag", "knn", "knn-medoid", "vpr-guided")
"""Every route, by name (`georag.strategies.registry` maps each to its code)."""


@dataclass(frozen=True)
class StrategyConfig:
    """Which route answers, and its settings."""

    name: str = "rag"
    """"rag" (needs an LLM; default), "knn" (top-1 neighbor), "knn-medoid" (medoid of the top knn_k) or
    "vpr-guided" (needs an LLM and a submap partition of the store)."""
    knn_k: int = 16
    """Neighbors the knn-medoid baseline takes the medoid of; default 16."""
    rag: RagConfig = field(default_factory=RagConfig)
    """Prompt variants, sampling and selection of the rag route (and of vpr-guided's hybrid)."""
    vpr: VprConfig = field(default_factory=VprConfig)
    """Prior, submap and re-ranking of the vpr-guided route."""
    calibration: str = ""
    """A calibration file (`georag eval calibrate`): confidence becomes the fitted probability that the
    prediction lies within the file's distance of the truth; default "" (the raw agreement)."""

    def __post_init__(self) -> None:
        if self.name not in STRATEGY_NAMES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGY_NAMES)}, got {self.name!r}")
        _at_least(self, "knn_k", 1)

    @property
    def needs_llm(self) -> bool:
        """True for the routes that ask an LLM."""
        return self.name in ("rag", "vpr-guided")


@dataclass(frozen=True)
class LLMConfig:
    """Which multimodal LLM answers, and how its requests are bounded."""

    url: str = "none"
    """none | triton://HOST:PORT/MODEL[?family=qwen2-vl&protocol=grpc|http] |
    openai://HOST:PORT/v1?model=NAME (openais:// for HTTPS); default none (retrieval only)."""
    timeout_s: float = 60.0
    """Time limit of each LLM request attempt, in seconds; default 60."""
    retries: int = 2
    """Extra attempts after a transient failure (refused, reset, 429, 5xx, timeout); default 2."""
    concurrency: int = 16
    """LLM requests open at once (in a batch run: photos whose requests run at once); default 16."""
    max_failures: int = 0
    """Photos of a batch run whose every LLM request failed (server down, refused) that fall back to
    retrieval before the run stops with an error (finished photos kept, resumable); -1: never stop, every
    such photo falls back. Answers that merely do not parse never count. Default 0 (strict: the first such
    photo stops the run)."""

    def __post_init__(self) -> None:
        _positive(self, "timeout_s")
        _at_least(self, "retries", 0)
        _at_least(self, "concurrency", 1)
        _at_least(self, "max_failures", -1)


@dataclass(frozen=True)
class EncoderConfig:
    """The SigLIP encoder: which model, on which backend."""

    model: str = ""
    """Hub id or local folder of the store's encoder (or an ONNX / TensorRT export); default "" (the
    store's own, as its manifest names it)."""
    backend: str = "torch"
    """"torch" (default), "onnxruntime" or "tensorrt"."""
    device: str | None = None
    """Device of the backend; default None (cpu; cuda for tensorrt)."""
    batch_size: int = 32
    """Photos encoded per call; default 32."""
    workers: int = 0
    """Decode threads; default 0 (every core)."""

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnxruntime", "tensorrt"):
            raise ConfigError(f"encoder.backend must be torch, onnxruntime or tensorrt, got {self.backend!r}")
        _at_least(self, "batch_size", 1)
        _at_least(self, "workers", 0)


@dataclass(frozen=True)
class ExclusionConfig:
    """Which gallery rows a query may not retrieve (leakage control; needs the photos' truth)."""

    same_author: bool = False
    """Drop rows whose author equals the query's (rows or queries without an author are kept); default off."""
    radius_km: float | None = None
    """Drop rows within this great-circle distance of the query's true location; default None (off)."""

    def __post_init__(self) -> None:
        if self.radius_km is not None and not (self.radius_km >= 0 and math.isfinite(self.radius_km)):
            raise ConfigError(f"exclude radius must be a finite distance >= 0 km, got {self.radius_km}")

    @property
    def active(self) -> bool:
        """True when anything is excluded."""
        return self.same_author or self.radius_km is not None

    def __str__(self) -> str:
        parts = (["same author"] if self.same_author else []) + (
            [f"within {self.radius_km:g} km of the truth"] if self.radius_km is not None else []
        )
        return " and ".join(parts) or "nothing"


@dataclass(frozen=True)
class ServeConfig:
    """The limits of a served pipeline (`georag serve` and the Triton `georag` model)."""

    max_image_mb: float = 20.0
    """Largest image a request may carry, in MiB; default 20 (larger requests are refused unread)."""
    encoder_timeout_s: float = 10.0
    """Time limit of the SigLIP step; default 10 s."""
    retrieval_timeout_s: float = 30.0
    """Time limit of each retrieval step; default 30 s (an exact search of 10M rows takes about 1 s)."""
    llm_timeout_s: float = 60.0
    """Time limit of each LLM step; default 60 s."""
    deadline_s: float = 120.0
    """Time limit of a whole request, waiting and decoding included; default 120 s."""
    max_requests: int = 64
    """Requests the pipeline runs at once; default 64."""
    max_queue: int = 256
    """Requests that may wait for a slot beyond those; more are refused at once (503); default 256."""
    allow_test_markers: bool = False
    """Accept the ``test_marker`` request parameter (servers set up for tests only); default False."""
    max_uploads: int = 128
    """Request bodies `georag serve` reads at once, from all clients; more are refused unread (503);
    default 128. An upload counts against ``max_requests + max_queue`` only once its body is in."""
    max_uploads_per_client: int = 8
    """Request bodies `georag serve` reads at once from one client address (the TCP peer) while half of
    ``max_uploads`` or more are being read; more are refused unread (429); default 8. Below half, one
    address may read more (a gateway's burst is not refused while there is room)."""
    body_timeout_s: float = 5.0
    """Longest wait of `georag serve` for the next piece of a request body, and the grace before
    ``min_upload_bytes_per_s`` applies (408 otherwise); default 5 s."""
    min_upload_bytes_per_s: int = 8192
    """Slowest upload `georag serve` accepts: after ``body_timeout_s``, a body must keep coming at this
    many bytes per second on average (408 otherwise); default 8192 (8 KiB/s)."""
    header_timeout_s: float = 10.0
    """Time a connection to `georag serve` has to send its request headers, from connecting or from its
    previous response; it is closed otherwise; default 10 s."""
    max_connections_per_client: int = 32
    """Connections to `georag serve` from one client address that may be sending a request (its headers
    or its body) at once; one more is closed as it connects; default 32."""

    def __post_init__(self) -> None:
        for name in (
            "max_image_mb",
            "encoder_timeout_s",
            "retrieval_timeout_s",
            "llm_timeout_s",
            "deadline_s",
            "body_timeout_s",
            "header_timeout_s",
        ):
            _positive(self, name)
        _at_least(self, "max_requests", 1)
        _at_least(self, "max_queue", 0)
        for name in (
            "max_uploads",
            "max_uploads_per_client",
            "min_upload_bytes_per_s",
            "max_connections_per_client",
        ):
            _at_least(self, name, 1)

    @property
    def max_image_bytes(self) -> int:
        """``max_image_mb`` in bytes."""
        return int(self.max_image_mb * (1 << 20))


@dataclass(frozen=True)
class Config:
    """Everything a locate run, a server or a Triton repository is set up with."""

    store: str = ""
    """The GeoStore folder; default "" (each command requires one)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """The global search."""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """The route and its settings."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The LLM endpoint and its request limits."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The SigLIP encoder."""
    exclusion: ExclusionConfig = field(default_factory=ExclusionConfig)
    """Leakage control of benchmark runs."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    """Limits of a served pipeline."""

    def __post_init__(self) -> None:
        s = self.search
        for v in self.strategy.rag.variants:
            if v.k_near > s.k_near or v.k_far > s.k_far:
                raise ConfigError(
                    f"prompt variant {v} shows more references than are retrieved (k_near={s.k_near}, "
                    f"k_far={s.k_far}); raise --k-near/--k-far"
                )

    def with_values(self, values: Mapping[str, Any]) -> Config:
        """A copy with dotted keys replaced (``{"search.k_near": 8, "strategy.rag.sampling.n": 3}``); values
        are checked and converted as a TOML file's are. ConfigError for an unknown key or a bad value."""
        tree: dict[str, Any] = {}
        for key, value in values.items():
            node = tree
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        out: Config = _merge(self, tree, "")
        return out

    def values(self, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The settings of ``sections`` (default all) as dotted keys and JSON-ready values, prompt variants
        written as on a command line ("rag:16:16,zero"): what `with_values` and a TOML file take back."""
        out: dict[str, Any] = {}
        for name in sections or tuple(f.name for f in dataclasses.fields(self)):
            value = getattr(self, name)
            if dataclasses.is_dataclass(value):
                out.update(_flat(dataclasses.asdict(value), f"{name}."))
            else:
                out[name] = value
        if _VARIANTS in out:
            out[_VARIANTS] = ",".join(str(v) for v in self.strategy.rag.variants)
        return out

    def get(self, key: str) -> Any:
        """The value at a dotted key (``"search.k_near"``)."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node


def load_config(path: str | Path | None = None, values: Mapping[str, Any] | None = None) -> Config:
    """The defaults, then the TOML file ``path`` (if any), then the dotted ``values`` (if any).

    Prompt variants that neither the file nor the values give follow the retrieval depth of the result
    (``rag:K_NEAR:K_FAR``), so ``k_near = 8`` alone is no conflict with the default ``rag:16:16``.
    ConfigError, naming the file and the key, for a bad file or value.
    """
    config, in_file = Config(), {}
    if path is not None:
        p = Path(path)
        in_file = read_config_file(p)
        try:
            config = _apply(config, in_file, follow=True)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    return _apply(config, dict(values or {}), follow=not _names_variants(in_file))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML config file's settings as dotted keys, unchecked (`load_config` checks them)."""
    p = Path(path)
    try:
        return _flat(tomllib.loads(p.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {p}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from exc


_VARIANTS = "strategy.rag.variants"


def _names_variants(values: Mapping[str, Any]) -> bool:
    return any(k in values for k in (_VARIANTS, "strategy", "strategy.rag"))


def _apply(config: Config, values: Mapping[str, Any], *, follow: bool) -> Config:
    """``config`` with ``values``; with ``follow``, prompt variants they do not name become
    ``rag:K_NEAR:K_FAR`` of the result (set last, so a lower k_near is no conflict with the default)."""
    if not values:
        return config
    if not follow or _names_variants(values):
        return config.with_values(values)
    out = config.with_values({**values, _VARIANTS: "zero"})
    return out.with_values({_VARIANTS: f"rag:{out.search.k_near}:{out.search.k_far}"})


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A TOML document as dotted keys (``{"search": {"k_near": 8}}`` -> ``{"search.k_near": 8}``); a
    key that should be a table but is not stays as it is, so that `Config.with_values` names it."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def default(key: str) -> Any:
    """The documented default at a dotted key (what ``--help`` shows)."""
    return Config().get(key)


def describe(key: str) -> str:
    """The default at a dotted key as a ``--help`` line shows it (``"16"``, ``"none"``, ``"rag:16:16"``,
    ``"off"``)."""
    value = default(key)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _merge(obj: Any, given: Mapping[str, Any], where: str) -> Any:
    """``obj`` (a config dataclass) with ``given``'s keys replaced, converted and checked."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'the config'} must be a table of keys")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in given.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{where}{key}'; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            if isinstance(value, type(current)):
                changes[key] = value
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key} must be a table of keys ([{where}{key}] in a TOML file)")
            changes[key] = _merge(current, value, f"{where}{key}.")
        else:
            changes[key] = _convert(value, hints[key], f"{where}{key}")
    try:
        return dataclasses.replace(obj, **changes)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: {exc}") from None


def _convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the field type ``hint`` (bool, int, float, str, None-able, prompt variants)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, options[0], key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if origin is tuple:  # prompt variants: "rag:16:16,zero" or a list of such strings
        if isinstance(value, tuple) and all(isinstance(v, PromptVariant) for v in value):
            return value
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be prompt variants such as 'rag:16:16,zero', got {value!r}")
        return parse_variants(value)
    raise ConfigError(f"{key}: cannot set a value of type {type(value).__name__} here")


def _at_least(obj: Any, name: str, low: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _positive(obj: Any, name: str) -> None:
    value = getattr(obj, name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _within(obj: Any, name: str, low: float, high: float) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
