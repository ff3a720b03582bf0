"""The LLM failure budget of a batch run: how many photos may have every LLM request fail before it stops."""

from __future__ import annotations

from georag.errors import LLMError
from georag.types import Prediction


class LLMFailureBudgetError(LLMError):
    """A batch run stopped: more photos than ``llm.max_failures`` had every LLM request fail."""


class FailureBudget:
    """Counts the photos whose every LLM request failed, as `Geolocator.locate` yields them: one past
    ``max_failures`` (-1: never) stops the run. One budget may span several `locate` calls."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures, self.count = max_failures, 0

    def check(self, pred: Prediction, why: str | None) -> Prediction:
        """``pred``, or LLMFailureBudgetError when it is the failed photo (``why``: its last LLM error; None:
        it did not fail) one past the budget."""
        if why is None:
            return pred
        self.count += 1
        if 0 <= self.max_failures < self.count:
            allowed = "none is allowed" if self.max_failures == 0 else f"{self.max_failures} are allowed"
            raise LLMFailureBudgetError(
                f"stopped: every LLM request failed for {self.count} photo(s) ({allowed}; "
                f"--llm-max-failures, -1 to fall back to retrieval instead); last, {pred.id}: {why}"
            )
        return pred
