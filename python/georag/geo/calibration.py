"""Calibrated confidence: the probability that a prediction lies within a stated distance of the truth.

A prediction's raw confidence is the agreement of its samples (`georag.geo.select.agreement_at`): a share,
not a probability. A calibration maps agreement features to the probability that the prediction is
within ``within_km`` of the truth (default 25 km, a city), fitted on predictions whose truth the user has
(`georag eval calibrate PRED --truth T --out calib.json`) and applied by ``georag locate --calibration
calib.json`` (``strategy.calibration``): ``confidence`` becomes that probability, the raw agreement is kept
in the evidence (``raw_confidence``) with what the number means (``calibration``).

Features of a prediction (`prediction_features`; the ones its record allows):

* ``agreement``: the share of the requested samples within 100 km of the answer (the raw confidence);
* ``answered``: the share of the requested samples that stated coordinates (needs the JSONL evidence);
* ``spread``: log10(1 + the median distance in km from the answer to the candidates) (JSONL evidence).

Methods (`georag.geo.fits`): ``isotonic`` (a non-decreasing map of agreement alone) or ``platt`` (logistic
on the standardized features). Fallbacks and failed photos are neither fitted on nor changed (a fallback's
confidence stays 0).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from georag.errors import ConfigError, InputError
from georag.geo.coords import haversine_km
from georag.geo.fits import isotonic_apply, isotonic_fit, platt_apply, platt_fit
from georag.types import Prediction

FORMAT = "georag-calibration"
VERSION = 1
WITHIN_KM = 25.0
"""The default distance a calibrated confidence speaks of: P(error <= 25 km)."""
METHODS = ("isotonic", "platt")
FEATURES = ("agreement", "answered", "spread")


def sample_features(
    lat: npt.ArrayLike, lon: npt.ArrayLike, at_lat: float, at_lon: float, asked: int, agreement: float
) -> dict[str, float]:
    """Every feature of an answer at (at_lat, at_lon) chosen among candidates ``lat``/``lon`` of ``asked``
    samples, whose raw confidence is ``agreement``."""
    la = np.asarray(lat, dtype=np.float64).ravel()
    lo = np.asarray(lon, dtype=np.float64).ravel()
    out = {"agreement": float(agreement)}
    if asked > 0:
        out["answered"] = min(1.0, la.size / asked)
    if la.size:
        out["spread"] = math.log10(1.0 + float(np.median(haversine_km(la, lo, at_lat, at_lon))))
    return out


def prediction_features(pred: Prediction) -> dict[str, float]:
    """The features a prediction's record allows: agreement always; answered and spread where the
    evidence holds the candidates and the number of samples asked (a rag record)."""
    ev = pred.evidence
    rag = ev.get("rag") if isinstance(ev.get("rag"), dict) else ev
    raw = float(ev.get("raw_confidence", pred.confidence))
    cands = pred.candidates
    asked = rag.get("asked") if isinstance(rag, dict) else None
    if not cands or not isinstance(asked, int) or not math.isfinite(pred.lat):
        return {"agreement": raw}
    lat = [c[0] for c in cands]
    lon = [c[1] for c in cands]
    return sample_features(lat, lon, pred.lat, pred.lon, asked, raw)


def feature_matrix(rows: list[dict[str, float]], names: tuple[str, ...]) -> npt.NDArray[np.float64]:
    """The (n, len(names)) matrix of those features; InputError naming a row that lacks one."""
    out = np.empty((len(rows), len(names)))
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            if name not in row:
                raise InputError(f"prediction {i} has no feature {name!r} (it needs the JSONL evidence)")
            out[i, j] = row[name]
    return out


@dataclass(frozen=True)
class Calibration:
    """A fitted map from features to P(error <= within_km); its JSON file is what `save` writes."""

    within_km: float
    method: str
    features: tuple[str, ...]
    params: dict[str, Any]
    """isotonic: {"x": block ends, "y": values}; platt: {"w", "b", "mean", "scale"}."""
    strategy: str = ""
    """The strategy of the predictions it was fitted on ("" unknown); applying it to another is refused."""
    fitted_on: dict[str, Any] = field(default_factory=dict)
    """n, how many were within, the base rate, the distance and the files, for the record."""

    def probability(self, rows: list[dict[str, float]]) -> npt.NDArray[np.float64]:
        """P(error <= within_km) of each row of features."""
        x = feature_matrix(rows, self.features)
        if self.method == "isotonic":
            return isotonic_apply(self.params["x"], self.params["y"], x[:, 0])
        z = (x - np.asarray(self.params["mean"])) / np.asarray(self.params["scale"])
        return platt_apply(self.params["w"], float(self.params["b"]), z)

    def meaning(self) -> dict[str, Any]:
        """What a calibrated confidence means, for the evidence."""
        return {"probability_within_km": self.within_km, "method": self.method}

    def apply(self, pred: Prediction) -> Prediction:
        """``pred`` with ``confidence`` the calibrated probability (raw agreement kept in the evidence);
        failed photos and fallbacks unchanged."""
        if pred.error is not None or pred.fallback is not None or "raw_confidence" in pred.evidence:
            return pred
        p = float(self.probability([prediction_features(pred)])[0])
        pred.evidence["raw_confidence"] = pred.confidence
        pred.evidence["calibration"] = self.meaning()
        pred.confidence = p
        return pred

    def fits(self, strategy: str) -> bool:
        """Whether this applies to ``strategy``'s predictions: fitted on the same route (a fallback such as
        "rag>knn" or a variant "rag+x" counts as its route), or on predictions of an unnamed strategy."""
        mine = _route(self.strategy)
        return not mine or _route(strategy) == mine

    def check_strategy(self, strategy: str) -> None:
        """ConfigError when this was fitted on another route's predictions (their agreement means another
        thing: a knn confidence is the neighbours' agreement, a rag one the samples')."""
        if not self.fits(strategy):
            raise ConfigError(
                f"the calibration was fitted on {self.strategy} predictions; this run's strategy is "
                f"{strategy}: fit one on {strategy} predictions (georag eval calibrate)"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "within_km": self.within_km,
            "method": self.method,
            "features": list(self.features),
            self.method: self.params,
            "strategy": self.strategy,
            "fitted_on": self.fitted_on,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "calibration") -> Calibration:
        """Back from `to_json`; ConfigError naming ``where`` for anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{where} is not a georag calibration file (georag eval calibrate writes one)")
        if data.get("version") != VERSION:
            raise ConfigError(
                f"{where}: calibration version {data.get('version')!r}; this georag reads {VERSION}"
            )
        try:
            method = str(data["method"])
            features = tuple(str(f) for f in data["features"])
            params = dict(data[method])
            within = float(data["within_km"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: incomplete calibration ({exc})") from exc
        if method not in METHODS or not features or not set(features) <= set(FEATURES):
            raise ConfigError(f"{where}: unknown method {method!r} or features {features}")
        return cls(
            within, method, features, params, str(data.get("strategy", "")), dict(data.get("fitted_on", {}))
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the calibration file {file}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"{file} is not JSON: {exc}") from exc
        return cls.from_json(data, str(file))


def _route(strategy: str) -> str:
    """The route a strategy label names: "rag>knn" (a fallback) and "rag+x" (a variant) are rag."""
    return strategy.split(">")[0].split("+")[0]


def load_calibration(path: str | os.PathLike[str], strategy: str) -> Calibration | None:
    """The calibration file ``path`` ("": none) for a run of ``strategy``; ConfigError when unreadable or
    fitted on another strategy's predictions."""
    if not str(path):
        return None
    cal = Calibration.load(path)
    cal.check_strategy(strategy)
    return cal


def fit_calibration(
    rows: list[dict[str, float]],
    within: npt.ArrayLike,
    *,
    within_km: float = WITHIN_KM,
    method: str = "isotonic",
    features: tuple[str, ...] | None = None,
    strategy: str = "",
    fitted_on: dict[str, Any] | None = None,
) -> Calibration:
    """Fits P(within) on the feature ``rows``; ``within``: 1 where the prediction was within ``within_km``.
    ``features``: default agreement for isotonic, every feature all rows have for platt."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if not rows:
        raise InputError("no predictions to fit the calibration on")
    y = np.asarray(within, dtype=np.float64).ravel()
    if features is None:
        common = [f for f in FEATURES if all(f in r for r in rows)]
        features = ("agreement",) if method == "isotonic" else tuple(common)
    if method == "isotonic" and features != ("agreement",):
        raise InputError("the isotonic method maps agreement alone; use platt for several features")
    x = feature_matrix(rows, features)
    if method == "isotonic":
        xs, ys = isotonic_fit(x[:, 0], y)
        params: dict[str, Any] = {"x": xs, "y": ys}
    else:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        w, b = platt_fit((x - mean) / scale, y)
        params = {"w": w, "b": b, "mean": mean.tolist(), "scale": scale.tolist()}
    record = {"n": int(y.size), "within": int(y.sum()), "base_rate": float(y.mean()), **(fitted_on or {})}
    return Calibration(float(within_km), method, tuple(features), params, strategy, record)
