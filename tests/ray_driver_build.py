"""Test driver run inside the Ray test cluster (see ray_cluster.py): a store build with `build_source_ray`.

    python ray_driver_build.py JOB.json

JOB: address, store, metadata, images, encoder, shard_rows, batch_size, and optionally
``kill_worker`` (SIGKILL the encoder actor's process once the first shard is committed) or ``die_after``
(SIGKILL this driver right after its Nth shard commit, as a crash would). Prints the BuildReport as JSON,
with the pid of the killed worker, on its last line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import georag.store.build as build
from georag.distributed.ray_build import RayBuildOptions, build_source_ray
from georag.store.build import BuildRequest
from georag.store.manifest import MANIFEST, Manifest


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    req = BuildRequest(
        store=Path(job["store"]),
        dataset="im2gps3k",
        metadata=Path(job["metadata"]),
        encoder=job["encoder"],
        images=tuple(Path(p) for p in job["images"]),
        shard_rows=job["shard_rows"],
    )
    if job.get("die_after"):
        die_after_commits(job["die_after"])
    killed: dict[str, int] = {}
    if job.get("kill_worker"):
        threading.Thread(target=kill_encoder_once, args=(req.store, killed), daemon=True).start()
    options = RayBuildOptions(address=job["address"], batch_size=job["batch_size"])
    report = build_source_ray(req, add=False, options=options)
    print(json.dumps({**asdict(report), "killed": killed.get("pid")}))


def die_after_commits(n: int) -> None:
    """The driver SIGKILLs itself right after its ``n``th shard commit."""
    commit = build._commit
    done = [0]

    def commit_then_maybe_die(*args: Any, **kwargs: Any) -> None:
        commit(*args, **kwargs)
        done[0] += 1
        if done[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    build._commit = commit_then_maybe_die  # type: ignore[assignment]


def kill_encoder_once(store: Path, killed: dict[str, int]) -> None:
    """Once the first shard is committed, SIGKILLs the encoder actor (a process of this namespace)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (store / MANIFEST).is_file() and Manifest.load(store).shards:
            for pid in encoder_pids():
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
        time.sleep(0.05)


def encoder_pids() -> list[int]:
    """Processes of this PID namespace whose title names the encoder stage (Ray's actor process title)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"EncodeStage" in title:
                found.append(int(entry.name))
    return found


if __name__ == "__main__":
    main(sys.argv[1])
