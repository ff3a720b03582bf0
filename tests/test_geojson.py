"""GeoJSON output (georag.geojson): `georag locate --out preds.geojson` and `/v1/locate?format=geojson`.

References are independent of the code under test: the CSV and the JSONL of the same run (read with the
csv and json modules), the JSON answer of the same request, and an RFC 7946 structure check written here
from the RFC (sections 3.1, 3.2, 3.3, 4), plus `shapely.geometry.shape` where shapely is installed.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from georag.cli import main
from georag.geojson import feature_collection, from_result, point
from georag.types import Prediction
from openai_standin import StandIn

PARIS = [(48.8566, 2.3522), (48.8606, 2.3376), (40.7128, -74.006)]


def check_rfc7946(doc: Any) -> list[dict[str, Any]]:
    """Raises AssertionError unless ``doc`` is an RFC 7946 FeatureCollection of Features whose geometry
    is a Point or null; returns its features."""
    assert isinstance(doc, dict) and doc.get("type") == "FeatureCollection", "3.3: a FeatureCollection"
    assert "crs" not in doc, "4: no crs member (WGS-84 is implied)"
    features = doc.get("features")
    assert isinstance(features, list), "3.3: features is an array"
    for f in features:
        assert isinstance(f, dict) and f.get("type") == "Feature", "3.2: type Feature"
        assert "geometry" in f and "properties" in f, "3.2: geometry and properties members, null allowed"
        assert f["properties"] is None or isinstance(f["properties"], dict)
        g = f["geometry"]
        if g is None:
            continue
        assert g.get("type") == "Point", g
        pos = g.get("coordinates")
        assert isinstance(pos, list) and len(pos) == 2, "3.1.1: [longitude, latitude]"
        assert all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in pos)
        assert -180.0 <= pos[0] <= 180.0 and -90.0 <= pos[1] <= 90.0, pos
        try:
            from shapely.geometry import shape
        except ImportError:
            continue
        assert shape(g).x == pos[0] and shape(g).y == pos[1]
    return features


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _locate(env: dict[str, Any], paths: list[Path], out: Path, *extra: str) -> str:
    args = ["locate", *map(str, paths), "--store", str(env["store"]), "--out", str(out), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


# Pure conversion.


def test_points_are_lon_lat_wrapped_and_invalid_ones_are_null() -> None:
    assert point(48.85, 2.35) == {"type": "Point", "coordinates": [2.35, 48.85]}
    assert point(10.0, 190.0) == {"type": "Point", "coordinates": [-170.0, 10.0]}
    assert point(10.0, -540.0) == {"type": "Point", "coordinates": [-180.0, 10.0]}
    assert point(-90.0, 180.0) == {"type": "Point", "coordinates": [180.0, -90.0]}
    for lat, lon in ((95.0, 0.0), (math.nan, 1.0), (1.0, math.inf), (None, 1.0)):
        assert point(lat, lon) is None


def test_a_collection_holds_predictions_failures_and_on_request_the_evidence() -> None:
    ok = Prediction(
        "a.jpg", 48.8566, 2.3522, 0.6, "rag",
        evidence={
            "candidates": [[48.8566, 2.3522], [40.7128, -74.006], [1.0, 200.0]],
            "neighbors": {
                "near": [{"row": 7, "score": 0.9, "lat": 10.0, "lon": 20.0}],
                "far": [{"row": 3, "score": -0.2, "lat": -30.0, "lon": 179.5}],
            },
        },
    )  # fmt: skip
    fell_back = Prediction(
        "b.jpg", 1.5, 2.5, 0.0, "rag>knn", fallback="none of the 3 LLM answers stated coordinates"
    )
    failed = Prediction("c.jpg", error="not an image")
    plain = feature_collection([ok, fell_back, failed])
    features = check_rfc7946(plain)
    assert [f["properties"]["id"] for f in features] == ["a.jpg", "b.jpg", "c.jpg"]
    assert features[0] == {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [2.3522, 48.8566]},
        "properties": {
            "id": "a.jpg", "role": "prediction", "confidence": 0.6, "strategy": "rag", "error": None,
            "fallback": None,
        },
    }  # fmt: skip
    assert features[1]["properties"]["fallback"].startswith("none of the 3")
    assert features[2]["geometry"] is None
    assert (
        features[2]["properties"]["error"] == "not an image"
        and features[2]["properties"]["confidence"] is None
    )
    full = check_rfc7946(feature_collection([ok, failed], evidence=True))
    roles = [(f["properties"]["role"], f["properties"].get("rank")) for f in full]
    assert roles == [
        ("prediction", None), ("candidate", 0), ("candidate", 1), ("candidate", 2), ("near", 0), ("far", 0),
        ("prediction", None),
    ]  # fmt: skip
    assert full[3]["geometry"]["coordinates"] == [-160.0, 1.0]  # 200 degrees east, wrapped
    assert full[4]["properties"] == {"id": "a.jpg", "role": "near", "rank": 0, "row": 7, "score": 0.9}
    assert full[5]["geometry"]["coordinates"] == [179.5, -30.0]
    json.dumps(plain, allow_nan=False)  # strict JSON


# `georag locate --out preds.geojson`.


def test_locate_writes_a_geojson_that_matches_its_csv(locate_env: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"plain text, not a photo")
    paths = [*locate_env["queries"][:6], bad]
    output = _locate(locate_env, paths, tmp_path / "out" / "preds.geojson")
    assert "preds.geojson" in output
    rows = _csv(tmp_path / "out" / "preds.csv")
    doc = json.loads((tmp_path / "out" / "preds.geojson").read_text(encoding="utf-8"))
    features = check_rfc7946(doc)
    assert [f["properties"]["id"] for f in features] == [r["id"] for r in rows] == [p.name for p in paths]
    assert {f["properties"]["role"] for f in features} == {"prediction"}
    for f, row in zip(features, rows, strict=True):
        props = f["properties"]
        assert (props["strategy"], props["error"] or "", props["fallback"] or "") == (
            row["strategy"], row["error"], row["fallback"],
        )  # fmt: skip
        if row["error"]:
            assert f["geometry"] is None and props["confidence"] is None
            continue
        lon, lat = f["geometry"]["coordinates"]
        assert abs(lat - float(row["lat"])) <= 1e-6 and abs(lon - float(row["lon"])) <= 1e-6
        assert f"{props['confidence']:.3f}" == row["confidence"]  # the CSV writes it to 3 decimals
    assert features[-1]["properties"]["error"] and "not an image" in features[-1]["properties"]["error"]
    assert not list((tmp_path / "out").glob("*.tmp-*")), "no temporary file is left"


def test_format_geojson_and_the_evidence(locate_env: dict[str, Any], tmp_path: Path) -> None:
    paths = locate_env["queries"][:3]
    script = [json.dumps({"latitude": a, "longitude": b}) for a, b in PARIS]
    with StandIn(script=lambda body: script) as llm:
        _locate(
            locate_env, paths, tmp_path / "preds.csv", "--format", "geojson", "--geojson-evidence",
            "--llm", llm.url, "--samples", "3",
        )  # fmt: skip
    records = _jsonl(tmp_path / "preds.jsonl")
    features = check_rfc7946(json.loads((tmp_path / "preds.geojson").read_text()))
    for rec in records:
        mine = [f for f in features if f["properties"]["id"] == rec["id"]]
        roles = [f["properties"]["role"] for f in mine]
        near, far = rec["evidence"]["neighbors"]["near"], rec["evidence"]["neighbors"]["far"]
        regions = rec["evidence"]["regions"]
        assert regions, "three answers make at least one region"
        r = len(regions)
        assert roles == (
            ["prediction"] + ["region"] * r + ["candidate"] * 3 + ["near"] * len(near) + ["far"] * len(far)
        )
        assert mine[0]["geometry"]["coordinates"] == [rec["lon"], rec["lat"]]
        assert [
            (*f["geometry"]["coordinates"], f["properties"]["share"], f["properties"]["radius_km"])
            for f in mine[1 : 1 + r]
        ] == [(g["lon"], g["lat"], g["share"], g["radius_km"]) for g in regions]
        assert [f["geometry"]["coordinates"] for f in mine[1 + r : 4 + r]] == [[b, a] for a, b in PARIS]
        got = [
            (f["properties"]["row"], f["properties"]["score"], *f["geometry"]["coordinates"])
            for f in mine[4 + r :]
        ]
        assert got == [(n["row"], n["score"], n["lon"], n["lat"]) for n in near + far]


def test_a_resumed_run_writes_every_photo_and_bad_formats_are_refused(
    locate_env: dict[str, Any], tmp_path: Path
) -> None:
    queries = locate_env["queries"]
    out = tmp_path / "p.geojson"
    _locate(locate_env, queries[:2], out)
    _locate(locate_env, queries[:4], out)  # resumes: two done, two more
    ids = [f["properties"]["id"] for f in check_rfc7946(json.loads(out.read_text()))]
    assert ids == [p.name for p in queries[:4]] == [r["id"] for r in _csv(tmp_path / "p.csv")]
    args = ["locate", str(queries[0]), "--store", str(locate_env["store"])]
    refused = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x.geojson"), "--format", "csv"])
    assert refused.exit_code != 0 and "names a GeoJSON file, but --format is csv" in refused.output
    refused = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x.txt")])
    assert refused.exit_code != 0 and "or a .geojson" in refused.output
    assert not (tmp_path / "x.csv").exists()


# `/v1/locate?format=geojson`.


def test_the_server_answers_geojson_matching_its_json(locate_env: dict[str, Any]) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from georag.cli.options import config_from
    from georag.cli.serve_cmd import build_app

    photo = Path(locate_env["queries"][0]).read_bytes()
    app = build_app(config_from({"store": locate_env["store"]}, require=("store",)))
    with TestClient(app) as client:
        answer = client.post("/v1/locate?id=q.jpg", content=photo).json()
        plain = client.post("/v1/locate?id=q.jpg&format=geojson", content=photo)
        full = client.post("/v1/locate?id=q.jpg&format=geojson&evidence=1", content=photo)
        refusals = {
            query: client.post(f"/v1/locate?{query}", content=photo).json()["error"]
            for query in (
                "format=xml",
                "evidence=2",
                "evidence=1",
                "format=json&format=geojson",
                "colour=red",
            )
        }
        form = client.post("/v1/locate", files={"file": ("q.jpg", photo)}, data={"format": "geojson"})
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/geo+json"
    (feature,) = check_rfc7946(plain.json())
    assert feature["geometry"]["coordinates"] == [answer["lon"], answer["lat"]]
    assert feature["properties"] == {
        "id": "q.jpg", "role": "prediction", "confidence": answer["confidence"], "strategy": "knn",
        "error": None, "fallback": None,
    }  # fmt: skip
    features = check_rfc7946(full.json())
    near, far = answer["evidence"]["neighbors"]["near"], answer["evidence"]["neighbors"]["far"]
    assert len(features) == 1 + len(near) + len(far) == 33
    assert [f["properties"]["row"] for f in features[1:]] == [n["row"] for n in near + far]
    assert full.json() == from_result(answer, evidence=True)
    assert refusals == {
        "format=xml": "format must be json or geojson, got 'xml'",
        "evidence=2": "evidence must be 0 or 1, got '2'",
        "evidence=1": "evidence=1 is an option of format=geojson (the JSON answer always holds the evidence)",
        "format=json&format=geojson": "query parameter 'format' is given more than once",
        "colour=red": "unknown query parameter 'colour'; known: id, strategy, samples, variants, seed, "
        "temperature, format, evidence",
    }
    assert form.status_code == 400 and "format and evidence go in the query string" in form.json()["error"]
