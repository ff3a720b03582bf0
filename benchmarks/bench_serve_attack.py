#!/usr/bin/env python
"""`georag serve` under a bounded slow-client attack (issue 19); prints a markdown table.

Setup: a tiny random SigLIP, a store of the shared IM2GPS3k sample, and `georag serve --store` in knn
mode (no LLM) with its default limits, on 127.0.0.1 only. Each phase runs ``--attackers`` attacker
connections of one kind while legitimate clients (from 127.0.0.1, a new connection each) post real photos
at ``--rate`` per second; attackers that the server closes or answers reconnect a second later, so the
attack holds for the whole phase:

- header trickle: a request line, then one more header byte every 5 s, never ending the headers;
- silent headers: half the headers once, then nothing;
- body trickle: complete headers announcing 1 MiB, then 1 byte every 5 s (330 of them: 66 B/s in all).

Each kind runs from one address (127.0.0.2) and from ``--addresses`` others (127.0.1.N: Linux routes all
of 127/8 to the loopback), after a baseline without attack. A row: the attack, its connections (opened,
closed by the server unanswered, answered), the legitimate requests sent and answered 200, and their
latency. The promise: >= 99% of the legitimate requests succeed during every attack. About 2 minutes by
default (``--seconds``, all phases together, plus the store build).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from serve_process import Served, serve_process  # noqa: E402
from timing import log  # noqa: E402

IMAGES = REPO.parent / "shared" / "data" / "im2gps3k" / "images"
META = REPO.parent / "shared" / "data" / "im2gps3k" / "im2gps3k_places365.csv"
HOST = "127.0.0.1"
LEGIT = "127.0.0.1"
ONE = ("127.0.0.2",)
KINDS = ("header trickle", "silent headers", "body trickle")
TRICKLE_S = 5.0
BODY_HEAD = b"POST /v1/locate HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
"""A body trickler's headers: 1 MiB announced, 1 byte sent per `TRICKLE_S`."""


def build(work: Path) -> Path:
    """A store of the shared IM2GPS3k sample under a tiny random SigLIP; returns the store folder."""
    from georag.encoder import load_encoder
    from georag.encoder.tiny import make_tiny_siglip
    from georag.store.build import BuildRequest, build_source

    model = make_tiny_siglip(work / "model")
    log("building the store")
    request = BuildRequest(
        store=work / "store", dataset="im2gps3k", metadata=META, encoder=str(model), images=(IMAGES,)
    )
    build_source(request, add=False, encoder_factory=lambda: load_encoder(model))
    return work / "store"


def photos(n: int = 300) -> list[bytes]:
    return [path.read_bytes() for path in sorted(IMAGES.iterdir())[:n]]


@contextmanager
def served(store: Path, work: Path, *args: str) -> Iterator[Served]:
    """`georag serve --store STORE ARGS` on 127.0.0.1 and a free port, ready; stopped after."""
    with serve_process(["--store", str(store), *args], work / "serve.log", ready_s=300) as server:
        yield server


def process_stats(pid: int) -> tuple[int, int]:
    """The resident memory (KiB, VmRSS) and the open file descriptors of process ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def post(port: int, body: bytes, *, source: str = LEGIT, timeout_s: float = 30.0) -> tuple[str, float]:
    """POSTs ``body`` to /v1/locate (knn) on a new connection from ``source``; the status (or what went
    wrong) and the seconds it took."""
    start = time.monotonic()
    head = (
        f"POST /v1/locate?strategy=knn HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
        try:
            writer.write(head + body)
            return await reader.read()
        finally:
            writer.close()

    try:
        answer = await asyncio.wait_for(exchange(), timeout_s)
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "no answer"
    except asyncio.TimeoutError:
        status = "timeout"
    except OSError as exc:
        status = type(exc).__name__
    return status, time.monotonic() - start


@dataclass
class Attack:
    """What the attackers of one phase saw."""

    opened: int = 0
    closed: int = 0
    """Connections the server closed without an answer."""
    answers: Counter[str] = field(default_factory=Counter)


async def attacker(kind: str, port: int, source: str, stop: asyncio.Event, seen: Attack) -> None:
    """One attacker of ``kind`` (one of `KINDS`) from ``source``, reconnecting a second after each of its
    connections ends, until ``stop``."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(1.0)
            continue
        seen.opened += 1
        answered = False
        try:
            writer.write(BODY_HEAD if kind == "body trickle" else b"POST /v1/locate HTTP/1.1\r\nHost: x\r\n")
            while not stop.is_set():
                try:
                    got = await asyncio.wait_for(reader.read(65536), TRICKLE_S)
                except asyncio.TimeoutError:
                    if kind != "silent headers":
                        writer.write(b"x")
                    continue
                if not got:
                    break
                if got.startswith(b"HTTP/1.1 "):
                    seen.answers[got.split(b" ", 2)[1].decode()] += 1
                    answered = True
            else:
                answered = True  # still open when the phase ended: not closed by the server
        except OSError:
            pass
        finally:
            writer.close()
        seen.closed += not answered
        await asyncio.sleep(1.0)


@dataclass
class Phase:
    kind: str
    sources: tuple[str, ...]
    attackers: int
    attack: Attack = field(default_factory=Attack)
    legit: list[tuple[str, float]] = field(default_factory=list)

    def success(self) -> float:
        """The share of legitimate requests answered 200, in percent."""
        return 100.0 * sum(status == "200" for status, _ in self.legit) / max(len(self.legit), 1)

    def cells(self) -> list[str]:
        ok = [s for status, s in self.legit if status == "200"]
        other = Counter(status for status, _ in self.legit if status != "200")
        ms = np.array(ok) * 1000.0

        def q(p: float) -> str:
            return f"{np.percentile(ms, p):.0f}" if len(ms) else "-"

        a = self.attack
        where = "-" if not self.attackers else f"{len(self.sources)} address{'es' * (len(self.sources) > 1)}"
        answered = ", ".join(f"{k}: {v}" for k, v in sorted(a.answers.items())) or "-"
        return [self.kind, str(self.attackers), where, str(a.opened), str(a.closed), answered,
                str(len(self.legit)), str(len(ok)), f"{self.success():.1f}%", q(50), q(99),
                ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "-"]  # fmt: skip


HEADER = ["attack", "attackers", "from", "attacker conns", "closed unanswered", "answered",
          "legit sent", "legit 200", "success", "p50 ms", "p99 ms", "legit other"]  # fmt: skip


async def run_phase(phase: Phase, port: int, images: list[bytes], rate: float, seconds: float) -> None:
    """``phase``'s attackers, then ``seconds`` of legitimate requests at ``rate`` per second under them."""
    stop = asyncio.Event()
    sources = [phase.sources[i % len(phase.sources)] for i in range(phase.attackers)]
    attackers = [asyncio.create_task(attacker(phase.kind, port, s, stop, phase.attack)) for s in sources]
    await asyncio.sleep(2.0 if attackers else 0.0)  # the attack is in place first
    sent: list[asyncio.Task[tuple[str, float]]] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        sent.append(asyncio.create_task(post(port, images[len(sent) % len(images)])))
        await asyncio.sleep(max(0.0, start + len(sent) / rate - time.monotonic()))
    phase.legit = list(await asyncio.gather(*sent))
    stop.set()
    await asyncio.gather(*attackers)


def phases(attackers: int, addresses: int) -> list[Phase]:
    several = tuple(f"127.0.1.{i + 1}" for i in range(addresses))
    out = [Phase("none (baseline)", (), 0)]
    for kind in KINDS:
        out += [Phase(kind, ONE, attackers), Phase(kind, several, attackers)]
    return out


def table(rows: list[Phase]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row.cells()) + " |" for row in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="all phases together (default 120)")
    parser.add_argument("--attackers", type=int, default=330, help="attacker connections per phase")
    parser.add_argument("--addresses", type=int, default=10, help="addresses of the spread attacks")
    parser.add_argument("--rate", type=float, default=8.0, help="legitimate requests per second")
    parser.add_argument("--work", type=Path, default=None, help="folder for the store (default: a temp one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="georag-attack-") as tmp:
        work = args.work or Path(tmp)
        store = work / "store" if (work / "store").is_dir() else build(work)
        images = photos()
        rows = phases(args.attackers, args.addresses)
        with served(store, work) as server:
            before = process_stats(server.pid)
            for row in rows:
                log(f"phase: {row.kind}, {row.attackers} attackers from {len(row.sources)} address(es)")
                asyncio.run(run_phase(row, server.port, images, args.rate, args.seconds / len(rows)))
            after = process_stats(server.pid)
    print(table(rows))
    (rss0, fds0), (rss1, fds1) = before, after
    print(f"\nServer RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB; open files {fds0} -> {fds1}.")
    held = all(row.success() >= 99.0 for row in rows)
    print(f"Legitimate success >= 99% in every phase: {'yes' if held else 'NO'}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
