"""Whether the models the served pipeline calls are serving: fail fast while one is down.

Each dependency (the encoder, the retrieval, the LLM) has a `Breaker`. A failure saying that its model is
not serving (``ServingError.down``: it stalled past its step's limit, could not be reached, its process
is gone or it is unloaded) counts; `FAILURES_TO_TRIP` of them in a row mark it down for `COOLDOWN_S`,
during which the pipeline refuses the steps that need it at once (DependencyDown, 503 / UNAVAILABLE)
instead of letting every request wait out the step's limit. Then requests go through again: the first
failure marks it down again, a success marks it up. A process the server reports gone (DependencyDown
from the step itself) marks it down at once.

`Health.down` is what readiness reports (`georag serve`'s /health/ready); a request for a strategy that
needs no LLM (knn) is still answered while only the LLM is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from georag.serving.errors import DependencyDown, ServingError

log = logging.getLogger(__name__)

FAILURES_TO_TRIP = 3
"""Failures in a row that mark a dependency down (default 3)."""
COOLDOWN_S = 5.0
"""How long a dependency marked down is refused at once before it is tried again (default 5 s)."""


@dataclass
class _State:
    failures: int = 0
    down_until: float = 0.0
    reason: str = ""


class Breaker:
    """The health of one dependency, shared by every request (thread-safe)."""

    def __init__(
        self, name: str, *, failures_to_trip: int = FAILURES_TO_TRIP, cooldown_s: float = COOLDOWN_S
    ) -> None:
        self.name, self.failures_to_trip, self.cooldown_s = name, failures_to_trip, cooldown_s
        self._state = _State()
        self._lock = threading.Lock()

    def check(self) -> None:
        """DependencyDown while the dependency is marked down."""
        with self._lock:
            left = self._state.down_until - time.monotonic()
            reason = self._state.reason
        if left > 0:
            raise DependencyDown(f"the {self.name} is down: {reason}; retry in {max(left, 1.0):.0f} s")

    def down_reason(self) -> str | None:
        """Why the dependency is marked down, or None while it is up."""
        with self._lock:
            return self._state.reason if self._state.down_until > time.monotonic() else None

    def succeeded(self) -> None:
        with self._lock:
            was_down = self._state.down_until > 0
            self._state = _State()
        if was_down:
            log.warning("georag: the %s answers again", self.name)

    def failed(self, error: ServingError) -> None:
        """Counts ``error`` when it says the dependency is not serving (``error.down``)."""
        if not error.down:
            return
        first = False
        with self._lock:
            state = self._state
            state.failures += 1
            trip = state.failures >= self.failures_to_trip or isinstance(error, DependencyDown)
            if trip:
                first = state.down_until <= time.monotonic()
                state.down_until = time.monotonic() + self.cooldown_s
                state.reason = _reason(error, state.failures)
        if trip and first:
            log.warning(
                "georag: the %s is down (%s); refusing it for %g s", self.name, error, self.cooldown_s
            )


def _reason(error: ServingError, failures: int) -> str:
    if isinstance(error, DependencyDown):
        return str(error)
    return f"{failures} calls in a row failed, the last: {error}"


class Health:
    """The breakers of a pipeline's dependencies, by name."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        """``labels``: each dependency's name -> how messages name it ("retrieval" -> "retrieval model")."""
        self.breakers = {name: Breaker(label) for name, label in labels.items()}

    def __getitem__(self, name: str) -> Breaker:
        return self.breakers[name]

    def down(self) -> dict[str, str]:
        """The dependencies marked down right now: name -> "the LLM is down: why"."""
        found = {name: (b.name, b.down_reason()) for name, b in self.breakers.items()}
        return {
            name: f"the {label} is down: {why}" for name, (label, why) in found.items() if why is not None
        }
