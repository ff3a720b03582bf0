"""The true location and author of benchmark photos, by image file name (for leakage exclusions)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from georag.datasets import ColumnMap, read_dataset
from georag.locate.exclusion import QueryTruth


def load_truth(path: Path, format: str, columns: ColumnMap | None = None) -> dict[str, QueryTruth]:
    """``{file name: QueryTruth}`` from a benchmark's metadata, read by `georag.datasets`.

    Keys are both the dataset's image id and the file name of its image (OSV-5M ids name ``{id}.jpg``), so
    a photo matches whichever its file is called.
    """
    table = read_dataset(path, format, columns=columns).table
    out: dict[str, QueryTruth] = {}
    for image_id, name, lat, lon, author in zip(
        table.column("image_id").to_pylist(),
        table.column("image_name").to_pylist(),
        table.column("lat").to_pylist(),
        table.column("lon").to_pylist(),
        table.column("author").to_pylist(),
        strict=True,
    ):
        truth = QueryTruth(float(lat), float(lon), author)
        out[str(image_id)] = truth
        out.setdefault(PurePosixPath(str(name)).name, truth)
    return out
