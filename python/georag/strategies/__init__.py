"""Strategies: routes through the parts (knn: retrieval only; rag: retrieval-augmented LLM)."""

from __future__ import annotations
