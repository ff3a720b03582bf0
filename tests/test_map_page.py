"""The map page of `georag serve` (georag.serving.page, static/) and its gallery thumbnails.

The page is tested in a real browser: the real `georag serve` command on 127.0.0.1 (tiny SigLIP, the store
of shared IM2GPS3k photos, the stand-in LLM), headless Chromium (Debian's `chromium`) driven by
Playwright. What the page shows is checked against the JSON answer to the same photo sent to /v1/locate
directly; the markers' positions against that answer's coordinates as Leaflet holds them and as drawn on
screen; the page's GeoJSON download against `georag.geojson`. The browser tests skip without chromium,
Playwright or the shared data; the routes' tests need neither browser.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from encoder_fixtures import SHARED_IMAGES
from georag.serving.gallery import GalleryImages
from georag.serving.page import STATIC
from openai_standin import StandIn
from serve_process import serve_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANSWERS = [(48.8566, 2.3522), (41.9028, 12.4964), (48.8606, 2.3376), (40.4168, -3.7038), (48.853, 2.3499)]
"""Scripted LLM answers: three in Paris, one in Rome, one in Madrid."""
SCRIPT = {"texts": [json.dumps({"latitude": a, "longitude": b}) for a, b in ANSWERS]}
"""What the stand-in LLM answers now (a test may change it, and restores it)."""


def _app(locate_env: dict[str, Any], **options: Any) -> Any:
    from georag.cli.options import config_from
    from georag.cli.serve_cmd import build_app

    return build_app(config_from({"store": locate_env["store"], **options}, require=("store",)))


def _image(data: bytes) -> Any:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data))


# The routes, without a browser.


def test_the_page_and_every_file_it_names_are_served(locate_env: dict[str, Any]) -> None:
    with TestClient(_app(locate_env)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        named = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
        for script in ("app.js", "map.js"):
            named += [
                f"static/{m}" for m in re.findall(r'from "\./([a-z]+\.js)"', (STATIC / script).read_text())
            ]
        named.append("static/vendor/world-atlas/countries-110m.json")  # fetched by app.js
        assert len(set(named)) >= 8
        for path in set(named):
            assert client.get(f"/{path}").status_code == 200, path
        for bad in (
            "/static/..%2Fpage.py",
            "/static/../page.py",
            "/static/%2e%2e/gallery.py",
            "/static/nope.js",
        ):
            assert client.get(bad).status_code == 404, bad
    for licence in ("leaflet", "topojson-client", "world-atlas"):
        assert (STATIC / "vendor" / licence / "LICENSE").is_file()
    shipped = sum(p.stat().st_size for p in STATIC.rglob("*") if p.is_file())
    assert shipped < 400_000, f"the page's files take {shipped} bytes"


def test_thumbnails_are_the_gallery_rows_own_images(locate_env: dict[str, Any]) -> None:
    from georag.store.store import GeoStore

    store = GeoStore.open(locate_env["store"])
    ids = store.metadata.column("image_id").to_pylist()
    with TestClient(_app(locate_env)) as client:
        assert client.get("/v1/info").json()["thumbnails"] is True
        got = {row: client.get(f"/v1/gallery/{row}/thumbnail") for row in (0, 7, len(ids) - 1)}
        missing = {
            path: client.get(path)
            for path in (
                f"/v1/gallery/{len(ids)}/thumbnail",
                "/v1/gallery/-1/thumbnail",
                "/v1/gallery/abc/thumbnail",
                "/v1/gallery/..%2F..%2Fetc%2Fpasswd/thumbnail",
                "/v1/gallery/1e3/thumbnail",
            )
        }
    from PIL import Image

    for row, answer in got.items():
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        thumb = _image(answer.content)
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
        # The reference: the row's image file, found by its id, downscaled here to the same size.
        with Image.open(SHARED_IMAGES / ids[row]) as original:
            ref = np.asarray(original.convert("RGB").resize(thumb.size), dtype=np.float64)
        other = (row + 1) % len(ids)
        with Image.open(SHARED_IMAGES / ids[other]) as unrelated:
            far = np.asarray(unrelated.convert("RGB").resize(thumb.size), dtype=np.float64)
        mine = np.asarray(thumb.convert("RGB"), dtype=np.float64)
        assert np.abs(mine - ref).mean() < 12 < np.abs(mine - far).mean(), row
    for path, answer in missing.items():
        assert answer.status_code == 404, path
        assert (
            set(answer.json()) == {"error", "code"}
            and "/work" not in answer.text
            and "/tmp" not in answer.text
        )


def test_the_gallery_never_reads_outside_its_image_folder(tmp_path: Path) -> None:
    import pyarrow as pa
    from PIL import Image

    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (600, 300), (200, 30, 30)).save(images / "sub" / "a.jpg")
    Image.new("RGB", (20, 20), (0, 0, 0)).save(tmp_path / "secret.jpg")  # beside the folder: never served
    (images / "text.jpg").write_bytes(b"not a photo")
    names = [
        "sub/a.jpg",
        "../secret.jpg",
        str(tmp_path / "secret.jpg"),
        "missing.jpg",
        "text.jpg",
        "sub/../a.jpg",
    ]
    metadata = pa.table({"source": ["s"] * len(names), "image_id": names})
    source = SimpleNamespace(name="s", images=[str(images)])
    store = SimpleNamespace(metadata=metadata, manifest=SimpleNamespace(sources=[source]))
    gallery = GalleryImages.of(store)
    assert gallery is not None
    first = gallery.thumbnail(0)
    assert first is not None and _image(first).size == (256, 128)
    assert [gallery.thumbnail(row) for row in range(1, len(names))] == [None] * (len(names) - 1)
    assert gallery.thumbnail(len(names)) is None and gallery.thumbnail(-1) is None
    # A store built from embeddings alone names no images: no thumbnails at all.
    bare = SimpleNamespace(
        metadata=metadata, manifest=SimpleNamespace(sources=[SimpleNamespace(name="s", images=[])])
    )
    assert GalleryImages.of(bare) is None and GalleryImages.of(None) is None


# The page in a real browser.


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60.0) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


@pytest.fixture(scope="module")
def served(locate_env: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real `georag serve` with the stand-in LLM, on a free port of 127.0.0.1: its base URL."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright", reason="needs Playwright (pip install playwright)")
    log = tmp_path_factory.mktemp("map_page") / "serve.log"
    with StandIn(script=lambda body: SCRIPT["texts"]) as llm:
        args = ["--store", str(locate_env["store"]), "--llm", llm.url, "--samples", "5"]
        with serve_process(args, log) as server:
            yield server.base


@pytest.fixture
def page(served: str) -> Iterator[Any]:
    """A fresh headless Chromium page on the map page, ready; its uncaught errors in ``page.problems``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.route("https://tile.openstreetmap.org/**", lambda route: route.abort())  # no network here
            problems: list[str] = []
            tab.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
            tab.on(
                "console",
                lambda msg: (
                    problems.append(msg.text)
                    if msg.type == "error" and "Failed to load resource" not in msg.text
                    else None
                ),
            )
            tab.problems = problems
            tab.goto(f"{served}/")
            tab.wait_for_selector("body[data-ready='1']", timeout=30_000)
            yield tab
        finally:
            browser.close()


def _wait(page: Any, expression: str, timeout_s: float = 60.0) -> Any:
    """Polls ``expression`` in the page until it is truthy (the page's CSP forbids Playwright's
    wait_for_function, which evaluates strings inside the page)."""
    end = time.monotonic() + timeout_s
    while not (value := page.evaluate(expression)):
        assert time.monotonic() < end, f"timed out waiting for {expression}"
        time.sleep(0.1)
    return value


def _settled(page: Any, n: int) -> None:
    _wait(
        page, f"document.querySelectorAll('.card[data-status=done], .card[data-status=error]').length >= {n}"
    )


def _untimed(result: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(result))
    out["evidence"].pop("timings", None)
    return out


def test_the_page_shows_what_the_api_answers(
    served: str, page: Any, locate_env: dict[str, Any], tmp_path: Path
) -> None:
    from georag.geojson import from_result

    photos = [Path(p) for p in locate_env["queries"][:2]]
    page.set_input_files("#files", [str(p) for p in photos])
    _settled(page, 2)
    assert page.is_visible("#download-all")  # both photos as one GeoJSON
    page.wait_for_timeout(500)  # the map's fit animation
    for i, photo in enumerate(photos):
        page.click(f".card[data-n='{i + 1}']")
        page.wait_for_timeout(400)
        status, direct = _post(f"{served}/v1/locate?id={photo.name}&strategy=rag", photo.read_bytes())
        assert status == 200, direct
        shown = page.evaluate("window.georagPage.state.selected.result")
        assert _untimed(shown) == _untimed(direct)
        # The text shown.
        text = {
            name: page.inner_text(f"[data-field='{name}']")
            for name in ("lat", "lon", "confidence", "strategy")
        }
        assert text == {
            "lat": f"{direct['lat']:.5f}",
            "lon": f"{direct['lon']:.5f}",
            "confidence": f"{round(direct['confidence'] * 100)}%",
            "strategy": "rag",
        }
        assert float(page.get_attribute("[data-field='lat']", "data-value")) == direct["lat"]
        assert page.inner_text("#photo-name") == photo.name
        # The markers: where Leaflet holds them, and where they are drawn.
        markers = page.evaluate("window.georagPage.markers()")
        (pred,) = [m for m in markers if m["role"] == "prediction"]
        assert (pred["lat"], pred["lng"]) == (direct["lat"], direct["lon"])
        assert page.get_attribute("#map", "data-pred-lat") == repr(direct["lat"])
        for m in markers:
            assert abs(m["x"] - m["expected"]["x"]) < 1.5 and abs(m["y"] - m["expected"]["y"]) < 1.5, m
        near, far = direct["evidence"]["neighbors"]["near"], direct["evidence"]["neighbors"]["far"]
        by_role = {
            role: [(m["lat"], m["lng"]) for m in markers if m["role"] == role]
            for role in ("candidate", "near", "far")
        }
        assert by_role["candidate"] == [tuple(c) for c in direct["evidence"]["candidates"]] == ANSWERS
        assert sorted(by_role["near"]) == sorted((n["lat"], n["lon"]) for n in near)
        assert sorted(by_role["far"]) == sorted((n["lat"], n["lon"]) for n in far)
        # The raw answers, on demand.
        if i == 0:  # closed at first; it stays open for the next photo
            assert not page.is_visible("#answers-list")
            page.click("#answers summary")
        assert page.locator("#answers-list .answer-text").all_inner_texts() == [
            a["text"] for a in direct["evidence"]["answers"]
        ]
        # The downloads, as a person clicking the links gets them.
        downloads = []
        for link, suffix in (("#download-json", ".json"), ("#download-geojson", ".geojson")):
            with page.expect_download() as started:
                page.click(link)
            downloads.append(json.loads(Path(started.value.path()).read_text()))
            assert started.value.suggested_filename == photo.stem + suffix
        assert _untimed(downloads[0]) == _untimed(direct)
        assert downloads[1] == from_result(direct, evidence=True)
    # Thumbnails of the similar photos, from the store's image folder.
    _wait(
        page, "[...document.querySelectorAll('#near-grid img')].some(i => i.complete && i.naturalWidth > 0)"
    )
    # The opt-in tile layer asks for OpenStreetMap's tiles (refused here: no network in tests).
    page.check("#osm-tiles")
    _wait(page, "document.querySelectorAll('.leaflet-tile-pane img').length > 0", 10)
    page.uncheck("#osm-tiles")
    shot = tmp_path / "map_page.png"
    page.screenshot(path=str(shot))
    picture = _image(shot.read_bytes()).convert("RGB")
    assert picture.size == (1400, 900) and len(picture.getcolors(1 << 20) or []) > 200, "not a blank page"
    print(f"screenshot: {shot}")
    assert page.problems == []


def test_a_non_image_shows_the_servers_error(served: str, page: Any, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("these are notes, not a photo\n")
    page.set_input_files("#files", str(notes))
    _settled(page, 1)
    status, body = _post(f"{served}/v1/locate?id=notes.txt&strategy=rag", notes.read_bytes())
    assert status == 400 and body["error"].startswith("bad image")
    assert page.is_visible("#error")
    assert page.inner_text("#error") == f"HTTP 400: {body['error']}"
    assert page.get_attribute(".card[data-n='1']", "data-status") == "error"
    assert page.evaluate("window.georagPage.markers()") == []
    assert page.is_visible("#drop") and page.is_hidden("#result") and page.is_hidden("#download-all")
    page.screenshot(path=str(tmp_path / "map_page_error.png"))
    assert page.problems == []


def test_a_fallback_is_shown_with_its_reason(
    served: str, page: Any, locate_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SCRIPT, "texts", ["I cannot tell where this is."])
    photo = Path(locate_env["queries"][2])
    page.set_input_files("#files", str(photo))
    _settled(page, 1)
    status, direct = _post(f"{served}/v1/locate?id={photo.name}&strategy=rag", photo.read_bytes())
    assert status == 200 and direct["strategy"] == "rag>knn" and direct["fallback"], direct
    assert page.inner_text("[data-field='strategy']") == "rag>knn"
    assert page.is_visible("#fallback") and page.inner_text("[data-field='fallback']") == direct["fallback"]
    assert page.inner_text("[data-field='confidence']") == "0%"
    roles = [m["role"] for m in page.evaluate("window.georagPage.markers()")]
    assert "candidate" not in roles and roles.count("prediction") == 1
    page.click("#answers summary")
    assert page.locator(".answer-none").count() == 5


def test_the_pages_geojson_is_georag_geojson(page: Any) -> None:
    from georag.geojson import feature_collection
    from georag.types import Prediction

    preds = [
        Prediction(
            "a.jpg", 48.8566, 182.5, 0.6, "vpr-guided+rag",
            evidence={
                "rag": {"candidates": [[48.8566, 2.3522], [1.0, -200.0], [95.0, 1.0], "x"]},
                "candidates": [{"row": 1, "lat": 3.0, "lon": 4.0}],
                "neighbors": {"near": [{"row": 7, "score": 0.9, "lat": 10.0, "lon": 20.0}], "far": []},
            },
        ),
        Prediction("b.jpg", 1.5, 2.5, 0.0, "rag>knn", fallback="no LLM answer stated coordinates"),
        Prediction("c.jpg", error="not an image"),
    ]  # fmt: skip
    records = [p.record() for p in preds]
    for evidence in (False, True):
        got = page.evaluate(
            "([records, evidence]) => import('./static/geojson.js')"
            ".then(m => m.featureCollection(records, evidence))",
            [records, evidence],
        )
        assert got == feature_collection(preds, evidence=evidence)
