"""The one config: defaults documented per field, TOML files and dotted overrides checked strictly."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import georag.config as config_module
from georag.config import (
    Config,
    PromptVariant,
    Sampling,
    default,
    describe,
    load_config,
    parse_variants,
)
from georag.errors import ConfigError


def _sections() -> list[type]:
    out, todo = [], [Config]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += [type(f.default_factory()) for f in dataclasses.fields(cls) if callable(f.default_factory)]
    return out


def test_every_field_documents_its_default() -> None:
    """Each field of each section is followed by a docstring that names its default (or is a section)."""
    tree = ast.parse(inspect.getsource(config_module))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for cls in _sections():
        body = classes[cls.__name__].body
        for i, node in enumerate(body):
            if not isinstance(node, ast.AnnAssign):
                continue
            name = node.target.id  # type: ignore[attr-defined]
            doc = body[i + 1] if i + 1 < len(body) else None
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), (cls.__name__, name)
            text = str(doc.value.value).lower()
            is_section = dataclasses.is_dataclass(getattr(cls(), name))
            if not is_section and cls is not Config:
                assert "default" in text, f"{cls.__name__}.{name} does not document its default"


def test_toml_file_then_dotted_values_override_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'store = "gallery"\n'
        "[search]\nk_near = 8\nk_far = 4\n"
        '[strategy]\nname = "vpr-guided"\n'
        '[strategy.rag]\nvariants = ["rag:8:4", "zero"]\n'
        "[strategy.rag.sampling]\nn = 3\ntemperature = 0.2\n"
        "[strategy.vpr]\nprior_weight = 0.25\nhybrid = true\n"
        "[exclusion]\nradius_km = 25\n",
        encoding="utf-8",
    )
    cfg = load_config(path, {"search.k_near": 12, "llm.timeout_s": 5})
    assert cfg.store == "gallery" and cfg.search.k_near == 12 and cfg.search.k_far == 4
    assert (
        cfg.strategy.name == "vpr-guided"
        and cfg.strategy.vpr.hybrid
        and cfg.strategy.vpr.prior_weight == 0.25
    )
    assert cfg.strategy.rag.variants == (PromptVariant("rag", 8, 4), PromptVariant("zero", 0, 0))
    assert cfg.strategy.rag.sampling == Sampling(n=3, temperature=0.2)
    assert cfg.exclusion.radius_km == 25.0 and cfg.exclusion.active
    assert cfg.llm.timeout_s == 5.0
    # untouched sections keep their documented defaults
    assert cfg.serve == Config().serve and cfg.strategy.vpr.sampling == Sampling(n=5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[search]\nk_nearest = 3\n", "unknown config key 'search.k_nearest'"),
        ("[search]\nk_near = '3'\n", "search.k_near must be an integer, got '3'"),
        ("[search]\nk_near = 'many'\n", "search.k_near must be an integer"),
        ("[search]\nk_near = 0\n", "k_near must be an integer >= 1"),
        ("[strategy]\nname = 'nearest'\n", "strategy must be one of"),
        ("[strategy.rag]\nvariants = 'rag:99:16'\n", "shows more references than are retrieved"),
        ("[strategy.rag]\nvariants = 'rag-16'\n", "prompt variant 'rag-16'"),
        ("[strategy.rag.sampling]\ntemperature = nan\n", "must be a finite number"),
        ("[llm]\ntimeout_s = -1\n", "timeout_s must be a positive number"),
        ("[exclusion]\nsame_author = 'perhaps'\n", "must be true or false"),
        ("search = 3\n", "search must be a table"),
        ("[search\n", "is not valid TOML"),
    ],
)
def test_bad_files_fail_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml") as info:
        load_config(path)
    assert message in str(info.value)


def test_a_missing_file_and_bad_dotted_keys_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        Config().with_values({"nope.x": 1})
    with pytest.raises(ConfigError, match="must be an integer"):
        Config().with_values({"search.k_far": True})


def test_defaults_read_back_for_help_texts() -> None:
    assert default("search.k_near") == 16 and describe("search.k_near") == "16"
    assert describe("strategy.rag.variants") == "rag:16:16"
    assert describe("llm.url") == "none" and describe("strategy.vpr.hybrid") == "off"
    assert describe("exclusion.radius_km") == "none"
    assert parse_variants("zero, rag:5:5") == (PromptVariant("zero", 0, 0), PromptVariant("rag", 5, 5))


def test_variants_named_nowhere_follow_the_retrieval_depth(tmp_path: Path) -> None:
    path = tmp_path / "shallow.toml"
    path.write_text("[search]\nk_near = 8\n", encoding="utf-8")
    assert load_config(path).strategy.rag.variants == (PromptVariant("rag", 8, 16),)
    assert load_config(values={"search.k_far": 4}).strategy.rag.variants == (PromptVariant("rag", 16, 4),)
    # named in the file, they stay (and a later shallower search is refused, naming the conflict)
    path.write_text("[search]\nk_near = 8\n[strategy.rag]\nvariants = 'rag:8:8,zero'\n", encoding="utf-8")
    assert len(load_config(path, {"search.k_far": 10}).strategy.rag.variants) == 2
    with pytest.raises(ConfigError, match="shows more references than are retrieved"):
        load_config(path, {"search.k_near": 4})
