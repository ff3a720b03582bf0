"""Multimodal LLMs: prompts from template files, clients (Triton vLLM, OpenAI-compatible), answer parsing."""

from __future__ import annotations
