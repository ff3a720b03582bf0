"""Joining predictions to ground truth by photo id, also across a trailing image extension ("x" = "x.jpg")."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from georag.errors import EvaluationError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic")
"""Extensions (any case) that `strip_extension` removes: ids that differ only by one of them match."""


@dataclass(frozen=True, repr=False)
class Join:
    """Which prediction belongs to which truth row."""

    pred_of_truth: npt.NDArray[np.int64]
    """For each truth row, the index of its prediction, or -1 when it has none (missing)."""
    truth_of_pred: npt.NDArray[np.int64]
    """For each prediction, the index of its truth row, or -1 when the truth has no such id (extra)."""
    by_extension: int
    """How many pairs matched only after stripping an image extension."""

    def __repr__(self) -> str:
        joined = int((self.pred_of_truth >= 0).sum())
        return (
            f"Join(joined={joined}, missing={int((self.pred_of_truth < 0).sum())}, "
            f"extra={int((self.truth_of_pred < 0).sum())}, by_extension={self.by_extension})"
        )


def strip_extension(image_id: str) -> str:
    """``image_id`` without one trailing image extension (IMAGE_EXTENSIONS, any case)."""
    stem, dot, ext = image_id.rpartition(".")
    return stem if dot and stem and f".{ext.lower()}" in IMAGE_EXTENSIONS else image_id


def check_unique(ids: Sequence[str], what: str) -> None:
    """EvaluationError when an id occurs twice: which of two answers would count is not defined."""
    if len(set(ids)) == len(ids):
        return
    repeated = [i for i, count in Counter(ids).items() if count > 1]
    raise EvaluationError(
        f"{what}: {len(repeated)} id(s) occur more than once (first: {repeated[0]!r}); keep one row per photo"
    )


def join_ids(pred_ids: Sequence[str], truth_ids: Sequence[str]) -> Join:
    """Match prediction ids to truth ids: equal ids first, then ids equal after `strip_extension` on both
    sides, where that pairs exactly one leftover prediction with exactly one leftover truth row (so "a.jpg"
    and "a.png" in one file never match a bare "a" by guess). Both id lists must be unique."""
    truth_at = {tid: i for i, tid in enumerate(truth_ids)}
    truth_of_pred = np.array([truth_at.get(pid, -1) for pid in pred_ids], dtype=np.int64)
    pred_of_truth = np.full(len(truth_ids), -1, dtype=np.int64)
    matched = truth_of_pred >= 0
    pred_of_truth[truth_of_pred[matched]] = np.flatnonzero(matched)
    by_extension = 0
    if not matched.all() and (pred_of_truth < 0).any():
        left_pred: dict[str, list[int]] = defaultdict(list)
        for j in np.flatnonzero(~matched).tolist():
            left_pred[strip_extension(pred_ids[j])].append(j)
        left_truth: dict[str, list[int]] = defaultdict(list)
        for i in np.flatnonzero(pred_of_truth < 0).tolist():
            left_truth[strip_extension(truth_ids[i])].append(i)
        for stem, js in left_pred.items():
            is_ = left_truth.get(stem, [])
            if len(js) == 1 and len(is_) == 1:
                truth_of_pred[js[0]] = is_[0]
                pred_of_truth[is_[0]] = js[0]
                by_extension += 1
    return Join(pred_of_truth, truth_of_pred, by_extension)
