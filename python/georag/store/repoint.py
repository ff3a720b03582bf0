"""Re-pointing a store at another copy of its encoder: allowed when the model files are the same.

A store names its encoder by model id, a local folder's path included, so a copy of the model in another
folder is refused as "another encoder". `set_encoder` compares what the models ARE
(`georag.encoder.identity`): the fingerprint the store recorded (or, for a store made before it recorded one,
the fingerprint of the files its encoder id still points at) against the new folder's.
"""

from __future__ import annotations

import os
from pathlib import Path

from georag.encoder.identity import model_fingerprint, model_folder
from georag.errors import StoreError
from georag.store.manifest import Manifest
from georag.store.writing import store_lock


def set_encoder(store: str | os.PathLike[str], model: str, *, force: bool = False) -> Manifest:
    """Makes ``model`` (a folder or a hub id) the store's encoder when its files are those the store was
    built with; returns the committed manifest. StoreError when they differ, or when the store's own files
    cannot be found to compare with and ``force`` is not given (then the caller vouches for the copy)."""
    root = Path(store)
    folder = model_folder(model)
    new = model_fingerprint(model)
    if folder is None or new is None:
        raise StoreError(
            f"{model!r} is neither a folder of model files nor a hub id in the local Hugging Face cache: "
            "there is nothing to compare with the store's encoder"
        )
    new_id = str(folder) if Path(model).expanduser().is_dir() else model
    with store_lock(root):
        manifest = Manifest.load(root)
        old = manifest.encoder_fingerprint or model_fingerprint(manifest.encoder)
        if old is None and not force:
            raise StoreError(
                f"{root} recorded no fingerprint of its encoder and {manifest.encoder!r} is not here to "
                f"compare with: if {model!r} is certainly the same model, re-run with --force"
            )
        if old is not None and old != new:
            raise StoreError(
                f"{model!r} is not the model {root} was built with ({manifest.encoder!r}): their files "
                "differ, so its embeddings would not be comparable; build a store with this encoder instead"
            )
        manifest.encoder, manifest.encoder_fingerprint = new_id, new
        manifest.save(root)
    return manifest
