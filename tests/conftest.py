"""Makes the test helpers importable from every test module; fixtures shared by several modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def locate_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny SigLIP and a store of 250 shared photos; the other 50 (every 6th) are the queries."""
    pytest.importorskip("torch")
    from encoder_fixtures import SHARED_IMAGES, make_tiny_siglip
    from georag.encoder import load_encoder
    from georag.store.build import BuildRequest, build_source
    from store_fixtures import need_shared, rows_with_images, write_csv

    need_shared()
    root = tmp_path_factory.mktemp("locate")
    tiny = make_tiny_siglip(root / "tiny")
    rows = rows_with_images()
    queries, gallery = rows[::6], [r for i, r in enumerate(rows) if i % 6]
    meta = write_csv(root / "gallery.csv", gallery)
    req = BuildRequest(
        store=root / "store", dataset="im2gps3k", metadata=meta, encoder=str(tiny), images=(SHARED_IMAGES,)
    )
    build_source(req, add=False, encoder_factory=lambda: load_encoder(tiny))
    return {
        "root": root,
        "tiny": tiny,
        "store": root / "store",
        "queries": [SHARED_IMAGES / r["IMG_ID"] for r in queries],
    }
