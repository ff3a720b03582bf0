#!/usr/bin/env python
"""A soak of `georag serve` (issue 19): ``--minutes`` (10) of mixed traffic, the server's memory and open
files sampled along the way; prints a markdown table and the growth.

Setup as benchmarks/bench_serve_attack.py (a tiny SigLIP, a store of the shared IM2GPS3k sample,
`georag serve` in knn mode with its default limits, 127.0.0.1 only). Traffic, per second on average: good
photos (``--rate``), a bad image (random bytes: 400), an oversized body (announced: 413 unread; every
fifth one streamed until the 413 comes), a client hanging up mid-upload, and ``--slow`` slow clients
(header and body trickles, silent headers, from 127.0.0.3) reconnecting all along. After a warm-up minute,
the server's VmRSS (/proc/PID/status) and open file descriptors (/proc/PID/fd) are sampled at the start,
every minute and at the end, with the answers counted so far.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path

from bench_serve_attack import HOST, KINDS, Attack, attacker, build, photos, post, process_stats, served
from timing import log

SLOW_SOURCE = "127.0.0.3"
OVERSIZE = 32 << 20
"""Bytes an oversized body announces (over the default 20 MiB cap)."""


async def raw(port: int, data: bytes, *, hang_up: bool, timeout_s: float = 30.0) -> str:
    """Sends ``data`` on a new connection; with ``hang_up`` closes at once ("hung up"), else the status."""

    async def exchange() -> str:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(data)
            if hang_up:
                await writer.drain()
                return "hung up"
            answer = await reader.read(4096)
            return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "no answer"
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), timeout_s)
    except asyncio.TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__


async def streamed_oversize(port: int) -> str:
    """A chunked body sent in 1 MiB chunks until the server answers (413 past the cap) or 40 MiB went."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"POST /v1/locate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (1 << 20, bytes(1 << 20))
        for _ in range(40):
            writer.write(chunk)
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), 0.001)
            except asyncio.TimeoutError:
                continue
            return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "no answer"
        return "not refused"
    except OSError as exc:
        return type(exc).__name__
    finally:
        writer.close()


class Traffic:
    """The mixed traffic and what it got back, by kind."""

    def __init__(self, port: int, images: list[bytes], rate: float) -> None:
        self.port, self.images, self.rate = port, images, rate
        self.counts: dict[str, Counter[str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, kind: str, request: Awaitable[str | tuple[str, float]]) -> None:
        async def run() -> None:
            status = await request
            self.counts.setdefault(kind, Counter())[status if isinstance(status, str) else status[0]] += 1

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def tick(self, i: int) -> None:
        """One tenth of a second's requests (``i``: the tick's number)."""
        port, every = self.port, max(1, round(10 / self.rate))
        if i % every == 0:
            self.send("good photo", post(port, self.images[(i // every) % len(self.images)]))
        if i % 10 == 3:
            self.send("bad image", post(port, os.urandom(2048)))
        if i % 10 == 5:
            if i % 50 == 5:
                self.send("oversized, streamed", streamed_oversize(port))
            else:
                announced = b"POST /v1/locate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % OVERSIZE
                self.send("oversized, announced", raw(port, announced, hang_up=False))
        if i % 10 == 7:
            partial = b"POST /v1/locate HTTP/1.1\r\nHost: x\r\nContent-Length: 102400\r\n\r\n" + bytes(10240)
            self.send("hang-up mid-upload", raw(port, partial, hang_up=True))

    def summary(self) -> str:
        return "; ".join(
            f"{kind} " + ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))
            for kind, c in sorted(self.counts.items())
        )


async def soak(
    port: int, pid: int, images: list[bytes], args: argparse.Namespace
) -> tuple[list[list[str]], str]:
    traffic = Traffic(port, images, args.rate)
    stop, slow = asyncio.Event(), Attack()
    slowpokes = [
        asyncio.create_task(attacker(KINDS[i % len(KINDS)], port, SLOW_SOURCE, stop, slow))
        for i in range(args.slow)
    ]
    rows: list[list[str]] = []
    warm_up_s, total_s = args.warm_up_s, args.minutes * 60.0
    start = time.monotonic()
    i = 0
    next_sample = start + warm_up_s
    while True:
        now = time.monotonic()
        if now >= next_sample:
            rss, fds = process_stats(pid)
            minute = (now - start - warm_up_s) / 60.0
            good = traffic.counts.get("good photo", Counter())
            rows.append([f"{minute:.1f}", f"{rss / 1024:.1f}", str(fds), str(sum(good.values())),
                         str(good["200"]), str(slow.opened)])  # fmt: skip
            log(f"minute {minute:.1f}: RSS {rss / 1024:.1f} MiB, {fds} open files; {traffic.summary()}")
            if now - start >= warm_up_s + total_s - 1e-6:
                break
            next_sample = min(next_sample + 60.0, start + warm_up_s + total_s)
        traffic.tick(i)
        i += 1
        await asyncio.sleep(max(0.0, start + i / 10 - time.monotonic()))
    stop.set()
    await asyncio.gather(*slowpokes, *list(traffic.tasks))
    return rows, traffic.summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length after the warm-up (default 10)")
    parser.add_argument("--warm-up-s", type=float, default=60.0, help="traffic before the first sample")
    parser.add_argument("--rate", type=float, default=5.0, help="good photos per second (at most 10)")
    parser.add_argument("--slow", type=int, default=30, help="slow clients all along")
    parser.add_argument("--work", type=Path, default=None, help="folder for the store (default: a temp one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="georag-soak-") as tmp:
        work = args.work or Path(tmp)
        store = work / "store" if (work / "store").is_dir() else build(work)
        with served(store, work) as server:
            rows, answers = asyncio.run(soak(server.port, server.pid, photos(), args))
    header = ["minute", "RSS MiB", "open files", "good photos done", "answered 200", "slow-client conns"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))
    first, last = rows[0], rows[-1]
    growth = float(last[1]) - float(first[1])
    print(f"\nRSS growth {growth:+.1f} MiB ({first[1]} -> {last[1]}); open files {first[2]} -> {last[2]}.")
    print(f"\nAnswers over the whole run (warm-up included): {answers}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
