"""Approximate contrastive search with faiss (placeholder until the faiss wrapper lands)."""

from __future__ import annotations


class FaissIndex:  # replaced in the next step
    pass
