"""`georag serve` answers as `georag locate` does: the configured strategy's answers calibrated with the
calibration file, and a photo whose EXIF carries GPS flagged in the evidence."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from georag import Geolocator
from georag.errors import ConfigError
from georag.geo.calibration import fit_calibration
from test_serve import serving

pytest.importorskip("fastapi")
Image = pytest.importorskip("PIL.Image")


def _with_gps(photo: Path, lat: tuple[float, ...], lon: tuple[float, ...]) -> bytes:
    """``photo`` re-encoded with an EXIF GPS position (north, east)."""
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", lat, "E", lon
    out = io.BytesIO()
    with Image.open(photo) as img:
        img.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_served_answers_are_calibrated_and_flagged_as_locate_does(
    locate_env: dict[str, Any], tmp_path: Path
) -> None:
    cal = fit_calibration(
        [{"agreement": a} for a in (0.1, 0.2, 0.3, 0.5, 0.8, 1.0)], [0, 0, 1, 0, 1, 1], strategy="knn"
    )
    path = str(cal.save(tmp_path / "knn.json"))
    photos = [_with_gps(locate_env["queries"][0], (40.0, 30.0, 0.0), (3.0, 0.0, 0.0))]
    photos += [Path(p).read_bytes() for p in locate_env["queries"][1:3]]
    with Geolocator.from_store(locate_env["store"], settings={"strategy.calibration": path}) as geo:
        expected = [geo.predict(photo, image_id=f"p{i}") for i, photo in enumerate(photos)]
    with serving(locate_env, strategy="knn", calibration=path) as client:
        answers = [client.post(f"/v1/locate?id=p{i}", content=photo) for i, photo in enumerate(photos)]
        medoid = client.post("/v1/locate?strategy=knn-medoid", content=photos[1])
    for want, got in zip(expected, answers, strict=True):
        assert got.status_code == 200, got.text
        out = got.json()
        assert (out["lat"], out["lon"], out["strategy"]) == (want.lat, want.lon, "knn")
        raw = out["evidence"]["raw_confidence"]
        assert raw == want.evidence["raw_confidence"]
        assert out["confidence"] == pytest.approx(float(cal.probability([{"agreement": raw}])[0]))
        assert out["confidence"] == pytest.approx(want.confidence)
        assert out["evidence"]["calibration"] == want.evidence["calibration"]
        assert out["evidence"].get("exif_gps") == want.evidence.get("exif_gps")
    assert answers[0].json()["evidence"]["exif_gps"] == {"lat": 40.5, "lon": 3.0}
    assert "exif_gps" not in answers[1].json()["evidence"]
    # another strategy's confidence means another thing: left as the raw agreement
    assert medoid.status_code == 200, medoid.text
    assert "raw_confidence" not in medoid.json()["evidence"]


def test_serve_refuses_a_calibration_of_another_strategy(locate_env: dict[str, Any], tmp_path: Path) -> None:
    cal = fit_calibration([{"agreement": a} for a in (0.2, 0.5, 0.9, 1.0)], [0, 1, 0, 1], strategy="rag")
    path = str(cal.save(tmp_path / "rag.json"))
    refused = pytest.raises(ConfigError, match="fitted on rag predictions; this run's strategy is knn")
    with refused, serving(locate_env, strategy="knn", calibration=path):
        pass
