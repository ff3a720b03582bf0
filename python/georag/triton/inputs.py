"""What a repository must know of its inputs: the store's and the exported encoder's identity and sizes.

The store, the ONNX export and the TensorRT engine must describe the same encoder (model id, dimension,
image size), or the retrieval would compare embeddings of different models; each mismatch is refused here,
naming both sides, before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from georag.encoder.backends.onnx_backend import META_MODEL_ID, find_onnx
from georag.encoder.preprocess import CONFIG_NAME, ProcessorSpec
from georag.errors import GeoRagError, MissingDependencyError, extra_hint
from georag.store.manifest import Manifest
from georag.store.store import BUILTIN_INDEXES
from georag.triton.model_config import RepositoryConfig, RepositoryError


@dataclass(frozen=True)
class EncoderFacts:
    """What the repository must know of the encoder and store (read from the files, or the example's)."""

    model_id: str
    dim: int
    height: int
    width: int
    store: str
    preprocessor: str | None
    """The preprocessor_config.json text written beside the georag model (None: SigLIP defaults)."""


def read_facts(config: RepositoryConfig) -> EncoderFacts:
    store = config.store_path.expanduser().resolve()
    try:
        manifest = Manifest.load(store)
    except GeoRagError as exc:
        raise RepositoryError(f"cannot read the store {store}: {exc}") from exc
    index = config.config.search.index
    if index not in BUILTIN_INDEXES and index not in manifest.ann:
        raise RepositoryError(
            f"the store has no index {index!r} (search.index): use exact, cuda or one of its faiss indexes "
            f"{sorted(manifest.ann)}"
        )
    strategy = config.config.strategy
    if strategy.name == "vpr-guided" and strategy.vpr.submap_by not in manifest.submaps:
        raise RepositoryError(
            f"the default strategy is vpr-guided but the store has no submap partition "
            f"{strategy.vpr.submap_by!r} (it has {sorted(manifest.submaps) or 'none'}); make one with "
            f"`georag index submaps {store} --by country`"
        )
    model_id, dim, height, width = _onnx_facts(find_onnx(config.encoder_onnx))
    if model_id != manifest.encoder or dim != manifest.dim:
        raise RepositoryError(
            f"the store was built with {manifest.encoder!r} (d={manifest.dim}) but the ONNX export is of "
            f"{model_id!r} (d={dim}); export the store's encoder"
        )
    export_dir = find_onnx(config.encoder_onnx).parent
    preprocessor = None
    if (export_dir / CONFIG_NAME).is_file():
        spec = ProcessorSpec.from_config_file(export_dir / CONFIG_NAME)
        if (spec.height, spec.width) != (height, width):
            raise RepositoryError(
                f"{CONFIG_NAME} resizes to {spec.height}x{spec.width} but the encoder takes {height}x{width}"
            )
        preprocessor = (export_dir / CONFIG_NAME).read_text(encoding="utf-8")
    elif height != width:
        raise RepositoryError(f"{export_dir} has no {CONFIG_NAME} and the input is not square")
    return EncoderFacts(model_id, dim, height, width, str(store), preprocessor)


def _onnx_facts(path: Path) -> tuple[str, int, int, int]:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading the ONNX export needs onnx: {extra_hint('onnx', 'onnx')}"
        ) from exc
    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    in_dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    out_dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    if len(in_dims) != 4 or min(in_dims[1:]) < 1 or not out_dims or out_dims[-1] < 1:
        raise RepositoryError(
            f"{path.name}: expected (batch, 3, H, W) -> (batch, d), got {in_dims} -> {out_dims}"
        )
    return meta.get(META_MODEL_ID, str(path)), int(out_dims[-1]), int(in_dims[2]), int(in_dims[3])


@dataclass(frozen=True)
class EngineFile:
    """A TensorRT engine of `georag encoder export --format tensorrt`, from its JSON sidecar."""

    path: Path
    profile: tuple[int, int, int]
    """Its batch profile: (min, opt, max)."""
    tensorrt: str | None
    """The TensorRT version that built it (None: the sidecar does not say)."""


def read_engine(where: Path, facts: EncoderFacts) -> EngineFile:
    """The engine file, its batch profile and TensorRT version, checked against the ONNX export's facts."""
    path = where.expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.engine")) + sorted(path.glob("*.plan"))
        if len(found) != 1:
            raise RepositoryError(f"{path} holds {len(found)} .engine/.plan files, expected one")
        path = found[0]
    sidecar = path.with_suffix(path.suffix + ".json")
    if not path.is_file() or not sidecar.is_file():
        raise RepositoryError(f"no TensorRT engine with its .json sidecar at {where}")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    seen = (meta.get("model_id"), meta.get("dim"), meta.get("height"), meta.get("width"))
    if seen != (facts.model_id, facts.dim, facts.height, facts.width):
        raise RepositoryError(
            f"the engine was built for {seen} but the ONNX export is {facts.model_id!r} "
            f"(d={facts.dim}, {facts.height}x{facts.width})"
        )
    low, opt, high = (int(x) for x in meta["batch"])
    built = meta.get("tensorrt")
    return EngineFile(path, (low, opt, high), None if built is None else str(built))


def standin_name(folder: Path) -> str:
    if not (folder / "config.pbtxt").is_file():
        raise RepositoryError(f"the LLM stand-in {folder} has no config.pbtxt")
    return folder.name
