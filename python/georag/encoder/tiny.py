"""A tiny random-weight SigLIP vision tower, saved like a real checkpoint: for demos and tests, no download.

Its embeddings carry no meaning (random weights); it exercises the real loading path (config.json,
safetensors, preprocessor_config.json) and every stage after it at a tiny cost.
"""

from __future__ import annotations

from pathlib import Path

TINY_SIZE = 32
"""Input side in pixels (default)."""
TINY_DIM = 32
"""Embedding width (default)."""


def make_tiny_siglip(
    folder: Path, *, seed: int = 0, image_size: int = TINY_SIZE, dim: int = TINY_DIM
) -> Path:
    """Saves a seeded random 2-layer SigLIP vision model (patch 8) and its image processor in ``folder``."""
    import torch
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    from georag.encoder.model import hf_progress_follows_georag

    config = SiglipVisionConfig(
        hidden_size=dim,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
    )
    torch.manual_seed(seed)
    model = SiglipVisionModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    with hf_progress_follows_georag():
        model.save_pretrained(folder, safe_serialization=True)
    SiglipImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
