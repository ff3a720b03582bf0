#!/usr/bin/env python
"""Bad photo inputs: what `georag locate` and `georag serve` make of files that are not good photos; a table
of class, tried, survived, lost.

Each class is a kind of input (``--seeds`` files each where the kind is random): empty, truncated, random
bytes, text, bit-flipped JPEGs, a PNG with a bad CRC, a decompression bomb, an image over the pixel budget,
image modes a decoder may stumble on (CMYK, 16-bit, palette with transparency, 1-bit, animated GIF), a
corrupt EXIF block; and, for `locate` only, things that are not regular files (FIFO, socket, folder,
device, broken and looping symlinks). Each input goes into ONE `georag locate` run together with good
photos, and its bytes (regular files) into a `georag serve` app.

A locate input survives when the run finishes within ``--timeout-s`` (no hang), the input has exactly one
row, and the row is what its class allows: an error with a reason and no coordinates ("fails"),
coordinates and no error ("decodes"), or either ("either"); the good photos' rows must equal those of a
run over the good photos alone (a bad neighbour changes nothing). A serve input survives when it gets 200
(where the class decodes) or a 400 with a message, never a 5xx or a dropped connection, and a good photo
is still answered afterwards. Lost: anything else, a traceback, a hang or a silent (0, 0).

  python benchmarks/bench_bad_photos.py [--seeds 10] [--timeout-s 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import damage_campaign as dc  # noqa: E402
from timing import log  # noqa: E402

Maker = Callable[[Path, np.random.Generator, bytes], None]
"""Writes one input at the path (its bytes may derive from a good JPEG's)."""


@dataclass(frozen=True)
class Kind:
    """A class of input: how one is made, what a row for it may be, and whether serve gets it too."""

    name: str
    make: Maker
    expect: str  # "fails", "decodes" or "either"
    random: bool = True  # one input per seed, else one in all
    served: bool = True  # a regular file: its bytes are posted to serve too


def _image(mode: str, fmt: str, **save: object) -> Maker:
    def make(path: Path, rng: np.random.Generator, good: bytes) -> None:
        from PIL import Image

        size = (int(rng.integers(16, 96)), int(rng.integers(16, 96)))
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
        else:
            img = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
        img.save(path, fmt, **save)

    return make


def _gif(path: Path, rng: np.random.Generator, good: bytes) -> None:
    from PIL import Image

    frames = [
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("P") for _ in range(3)
    ]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _bad_exif(path: Path, rng: np.random.Generator, good: bytes) -> None:
    """The good JPEG with an APP1 Exif segment of random bytes after its SOI marker."""
    junk = b"Exif\x00\x00" + rng.integers(0, 256, int(rng.integers(8, 200)), dtype=np.uint8).tobytes()
    path.write_bytes(good[:2] + b"\xff\xe1" + (len(junk) + 2).to_bytes(2, "big") + junk + good[2:])


def _truncated(path: Path, rng: np.random.Generator, good: bytes) -> None:
    path.write_bytes(good[: int(rng.integers(1, len(good) // 2))])


def _flipped(path: Path, rng: np.random.Generator, good: bytes) -> None:
    data = bytearray(good)
    for at in rng.integers(2, len(data), size=int(rng.integers(1, 20))):
        data[at] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))


def _random(path: Path, rng: np.random.Generator, good: bytes) -> None:
    path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes())


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")


def _png(width: int, height: int, rows: bytes, crc: int | None = None) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    body = (
        _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows), crc) + _png_chunk(b"IEND", b"")
    )
    return b"\x89PNG\r\n\x1a\n" + body


def _bad_crc(path: Path, rng: np.random.Generator, good: bytes) -> None:
    path.write_bytes(_png(8, 8, bytes(8 * 25), crc=int(rng.integers(0, 2**32))))


def _bomb(path: Path, rng: np.random.Generator, good: bytes) -> None:
    """20000 x 20000 declared (400 MP), a few KB of zlib: refused before it is decoded."""
    side = 20000
    rows = zlib.compress(bytes((side * 3 + 1) * 64))  # the rest is missing; the header says it all
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)


def _over_budget(path: Path, rng: np.random.Generator, good: bytes) -> None:
    """9000 x 9000 (81 MP): under Pillow's bomb limit, over georag's per-image pixel budget."""
    from PIL import Image

    Image.new("L", (9000, 9000)).save(path, "PNG")


def _fifo(path: Path, rng: np.random.Generator, good: bytes) -> None:
    os.mkfifo(path)


def _socket(path: Path, rng: np.random.Generator, good: bytes) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # the file stays after the socket is closed
    s.close()


KINDS = (
    Kind("empty file", lambda p, r, g: p.write_bytes(b""), "fails", random=False),
    Kind("truncated JPEG", _truncated, "fails"),
    Kind("random bytes", _random, "fails"),
    Kind("text named .jpg", lambda p, r, g: p.write_text("not a photo\n" * int(r.integers(1, 50))), "fails"),
    Kind("bit-flipped JPEG", _flipped, "either"),
    Kind("PNG with a bad CRC", _bad_crc, "either"),
    Kind("decompression bomb (400 MP declared)", _bomb, "fails", random=False),
    Kind("over the pixel budget (81 MP)", _over_budget, "fails", random=False),
    Kind("CMYK JPEG", _image("CMYK", "JPEG"), "decodes"),
    Kind("16-bit grey PNG", _image("I;16", "PNG"), "decodes"),
    Kind("palette PNG with transparency", _image("P", "PNG", transparency=0), "decodes"),
    Kind("1-bit PNG", _image("1", "PNG"), "decodes"),
    Kind("animated GIF", _gif, "decodes"),
    Kind("corrupt EXIF block", _bad_exif, "decodes"),
    Kind("FIFO", _fifo, "fails", random=False, served=False),
    Kind("socket", _socket, "fails", random=False, served=False),
    Kind("folder", lambda p, r, g: p.mkdir(), "fails", random=False, served=False),
    Kind("device (/dev/zero)", lambda p, r, g: p.symlink_to("/dev/zero"), "fails", random=False,
         served=False),
    Kind("broken symlink", lambda p, r, g: p.symlink_to(p.with_name("nowhere")), "fails", random=False,
         served=False),
    Kind("symlink loop", lambda p, r, g: p.symlink_to(p), "fails", random=False, served=False),
)  # fmt: skip


@dataclass
class Row:
    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)

    def add(self, outcome: str, problem: str) -> None:
        self.outcomes[outcome] += 1
        if problem:
            self.lost.append(problem)

    @property
    def tried(self) -> int:
        return sum(self.outcomes.values())


def make_inputs(folder: Path, seeds: int, good: bytes) -> dict[str, Kind]:
    """Every input in ``folder`` (its file name -> its kind)."""
    folder.mkdir(parents=True)
    made: dict[str, Kind] = {}
    for k, kind in enumerate(KINDS):
        for seed in range(seeds if kind.random else 1):
            name = f"bad{k:02d}-{seed:02d}.{'gif' if kind.make is _gif else 'jpg'}"
            kind.make(folder / name, np.random.default_rng(1000 * k + seed), good)
            made[name] = kind
    return made


def _locate(
    args: list[str], paths: list[Path], out: Path, timeout_s: float
) -> tuple[dict[str, dict[str, str]], str]:
    """Rows of one `georag locate` run over ``paths`` by id, and why it went wrong ("" when it did not)."""
    listing = out.with_suffix(".list")
    listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
    cmd = [*dc.CLI, *args, "--list", str(listing), "--strategy", "knn", "--out", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {}, f"georag locate did not finish within {timeout_s:.0f} s (a hang)"
    if done.returncode != 0:
        return {}, f"georag locate exited {done.returncode}: {done.stderr[-500:]}"
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))}
    return rows, ""


def judge_row(row: dict[str, str] | None, expect: str) -> tuple[str, str]:
    """(outcome, problem) of one input's row: "failed" (an error with a reason) or "decoded"."""
    if row is None:
        return "missing", "no row for it"
    error, lat, lon = row["error"].strip(), row["lat"].strip(), row["lon"].strip()
    if error:
        if lat or lon:
            return "failed", f"an error AND coordinates: {row}"
        return "failed", "" if expect in ("fails", "either") else f"should decode, failed: {error}"
    if not (lat and lon):
        return "blank", f"neither an error nor coordinates: {row}"
    return "decoded", "" if expect in ("decodes", "either") else f"should fail, gave ({lat}, {lon})"


def locate_campaign(root: Path, seeds: int, timeout_s: float) -> dict[str, Row]:
    args = dc.locate_setup(root, photos=12, rows=500)
    good = sorted((root / "photos").iterdir())
    args = [a for a in args if a != str(root / "photos")]  # the photos go in the --list file
    from PIL import Image

    jpeg = io.BytesIO()
    with Image.open(good[0]) as img:
        img.convert("RGB").save(jpeg, "JPEG", quality=90)
    inputs = make_inputs(root / "bad", seeds, jpeg.getvalue())
    reference, why = _locate(args, good, root / "good.csv", timeout_s)
    if why:
        raise SystemExit(f"the reference run failed: {why}")
    order = [*good, *(root / "bad" / n for n in inputs)]
    np.random.default_rng(0).shuffle(order)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    rows, why = _locate(args, order, root / "mixed.csv", timeout_s)
    log(f"locate over {len(order)} inputs: {time.perf_counter() - t0:.1f} s")
    table = {kind.name: Row(f"locate: {kind.name}") for kind in KINDS}
    table["good photos beside them"] = Row("locate: good photos beside them")
    for name, kind in inputs.items():
        if why:
            table[kind.name].add("run lost", f"{name}: {why}")
            continue
        table[kind.name].add(*judge_row(rows.get(name), kind.expect))
    for photo in good:
        got, want = rows.get(photo.name), reference.get(photo.name)
        same = got is not None and want is not None and (got["lat"], got["lon"]) == (want["lat"], want["lon"])
        table["good photos beside them"].add(
            "same" if same else "changed", "" if same else f"{photo.name}: {got}"
        )
    return table


def serve_campaign(root: Path, inputs: dict[str, Kind]) -> dict[str, Row]:
    """Posts every regular input's bytes to a `georag serve` app (in-process, TestClient)."""
    from fastapi.testclient import TestClient

    from georag.cli.options import config_from
    from georag.cli.serve_cmd import build_app

    config = config_from(
        {
            "store": root / "store",
            "encoder": str(root / "tiny-onnx"),
            "backend": "onnxruntime",
            "strategy": "knn",
        },
        require=("store",),
    )
    good = next(iter(sorted((root / "photos").iterdir()))).read_bytes()
    table: dict[str, Row] = {}
    with TestClient(build_app(config)) as client:
        for name, kind in inputs.items():
            if not kind.served:
                continue
            row = table.setdefault(f"serve: {kind.name}", Row(f"serve: {kind.name}"))
            try:
                r = client.post(f"/v1/locate?id={name}", content=(root / "bad" / name).read_bytes())
            except Exception as exc:  # a dropped connection or a server bug reaching the client
                row.add("exception", f"{name}: {type(exc).__name__}: {exc}")
                continue
            if r.status_code == 200:
                ok = kind.expect in ("decodes", "either") and "lat" in r.json()
                row.add("200", "" if ok else f"{name}: 200 for a {kind.name}: {r.text[:200]}")
            elif r.status_code == 400 and r.json().get("error"):
                row.add("400", "" if kind.expect != "decodes" else f"{name}: 400 {r.json()['error']}")
            else:
                row.add(str(r.status_code), f"{name}: {r.status_code} {r.text[:200]}")
        after = Row("serve: a good photo afterwards")
        r = client.post("/v1/locate", content=good)
        after.add(str(r.status_code), "" if r.status_code == 200 else f"{r.status_code} {r.text[:200]}")
        table[after.name] = after
    return table


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    print(f"| {'class':<{width}} | tried | survived | lost | how |")
    print(f"|{'-' * (width + 2)}|---:|---:|---:|---|")
    for r in rows:
        how = ", ".join(f"{k} {n}" for k, n in sorted(r.outcomes.items()))
        print(f"| {r.name:<{width}} | {r.tried} | {r.tried - len(r.lost)} | {len(r.lost)} | {how} |")
    tried, lost = sum(r.tried for r in rows), sum(len(r.lost) for r in rows)
    print(f"| {'all':<{width}} | {tried} | {tried - lost} | {lost} | |")
    for r in rows:
        for line in r.lost[:3]:
            print(f"LOST {r.name}: {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="inputs per random class")
    ap.add_argument("--timeout-s", type=float, default=300.0, help="a locate run longer than this is a hang")
    ap.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="georag-bad-photos-") as tmp:
        root = Path(tmp)
        table = locate_campaign(root, args.seeds, args.timeout_s)
        inputs = {p.name: kind for p, kind in _kinds_of(root).items()}
        table.update(serve_campaign(root, inputs))
    rows = list(table.values())
    print_table(rows)
    if args.json is not None:
        args.json.write_text(
            json.dumps([{"class": r.name, "tried": r.tried, "lost": r.lost} for r in rows], indent=1)
        )


def _kinds_of(root: Path) -> dict[Path, Kind]:
    """The inputs `make_inputs` wrote into root/bad, by path, with their kinds (from the names)."""
    return {p: KINDS[int(p.name[3:5])] for p in sorted((root / "bad").iterdir())}


if __name__ == "__main__":
    main()
