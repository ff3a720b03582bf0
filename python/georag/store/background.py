"""The full check of an open store run in a background thread, for long-running readers (`georag serve`).

`GeoStore.open` checks 16 blocks of each file by default; a server that stays up for weeks can afford to
hash every byte once. `BackgroundVerify` does what `georag index verify` does, against the manifest the
store was opened with, while the process starts; `status` says how far it got and what it found, for a
readiness answer (a server should not say it is ready until the state is "passed").
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Literal

from georag.errors import GeoRagError
from georag.store.manifest import Manifest
from georag.store.verify import verify_store

log = logging.getLogger(__name__)

State = Literal["running", "passed", "failed"]
MAX_SHOWN = 5
"""Problems `BackgroundVerify.status` lists (the log has them all)."""


class BackgroundVerify:
    """Hashes every file of a store in a daemon thread, started at once; see the module."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.total_bytes = sum(e.bytes for e in manifest.files.values())
        self.checked_bytes = 0
        self.problems: list[str] = []
        self._manifest = manifest
        self._done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="georag-store-verify", daemon=True)
        self._thread.start()

    def _add(self, n: int) -> None:
        self.checked_bytes += n

    def _run(self) -> None:
        try:
            report = verify_store(
                self.path, manifest=self._manifest, on_bytes=self._add, stop=self._stop.is_set
            )
            self.problems = report.problems + report.unfinished
        except (GeoRagError, OSError) as exc:
            self.problems = [str(exc)]
        except Exception as exc:  # never a silent pass: any failure of the check is a failed check
            log.exception("%s: the background check failed", self.path)
            self.problems = [f"the check itself failed: {type(exc).__name__}: {exc}"]
        finally:
            self._done.set()
            for line in self.problems:
                log.error("%s: %s", self.path, line)
            if not self.problems:
                log.info("%s: every file verified (%d bytes)", self.path, self.checked_bytes)

    @property
    def state(self) -> State:
        """ "running", then "passed" (every file as the manifest says) or "failed" (see ``problems``)."""
        if not self._done.is_set():
            return "running"
        return "failed" if self.problems else "passed"

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the check to finish (at most ``timeout`` seconds); True once it has."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        """Ends the check after the file being hashed (it then fails, as unfinished)."""
        self._stop.set()

    def status(self) -> dict[str, Any]:
        """JSON-ready: ``check`` "full", ``state``, ``checked_bytes`` of ``total_bytes``, ``problems``."""
        return {
            "check": "full",
            "state": self.state,
            "checked_bytes": self.checked_bytes,
            "total_bytes": self.total_bytes,
            "problems": self.problems[:MAX_SHOWN],
        }
