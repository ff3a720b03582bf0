"""The `georag` command line: version, help, the demo search, .npy inputs and their errors."""

from __future__ import annotations

import json
import re
import shlex
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from georag import __version__
from georag.cli import main
from georag.config import Config
from reference import check_neighbors


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_version_and_help() -> None:
    code, out = run("--version")
    assert code == 0 and out.strip() == f"georag, version {__version__}"
    code, out = run("--help")
    assert code == 0 and "search" in out
    code, out = run("search", "--help")
    assert code == 0 and "--k-near" in out and "nearest AND" in out


def test_demo_finds_every_source_row(tmp_path: Path) -> None:
    out_file = tmp_path / "r.npz"
    code, out = run(
        "search",
        "--demo-rows",
        "3000",
        "--demo-dim",
        "40",
        "--demo-queries",
        "5",
        "--out",
        str(out_file),
    )
    assert code == 0, out
    assert "5/5 queries found their source row first" in out
    with np.load(out_file, allow_pickle=False) as z:
        assert z["near_ids"].shape == (5, 16) and z["far_scores"].shape == (5, 16)


def test_npy_inputs_and_json_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    db = rng.standard_normal((500, 12), dtype=np.float32)
    q = rng.standard_normal((3, 12), dtype=np.float32)
    np.save(tmp_path / "db.npy", db)
    np.save(tmp_path / "q.npy", q.astype(np.float16))  # float16 is widened
    code, out = run(
        "search",
        "--database",
        str(tmp_path / "db.npy"),
        "--queries",
        str(tmp_path / "q.npy"),
        "--k-near",
        "4",
        "--k-far",
        "3",
        "--out",
        str(tmp_path / "r.json"),
    )
    assert code == 0, out
    got = json.loads((tmp_path / "r.json").read_text())

    class R:
        near_ids = np.array(got["near_ids"], dtype=np.int64)
        near_scores = np.array(got["near_scores"], dtype=np.float32)
        far_ids = np.array(got["far_ids"], dtype=np.int64)
        far_scores = np.array(got["far_scores"], dtype=np.float32)

    check_neighbors(R(), db, q.astype(np.float16).astype(np.float32), 4, 3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: np.save(p / "q.npy", np.ones((2, 12))), "holds float64; expected float32"),
        (lambda p: np.save(p / "q.npy", np.ones(12, np.float32)), "expected a 2-D"),
        (
            lambda p: np.save(p / "q.npy", np.ones((2, 7), np.float32)),
            "dimension 7 but the index has dimension 12",
        ),
        (lambda p: np.save(p / "q.npy", np.array([{"a": 1}], dtype=object)), "cannot read"),
        (lambda p: (p / "q.npy").write_bytes(b"not a numpy file"), "cannot read"),
        (lambda p: np.save(p / "q.npy", np.zeros((1, 12), np.float32)), "query 0 has zero norm"),
    ],
)
def test_bad_inputs_are_clear_errors(tmp_path: Path, make: object, message: str) -> None:
    np.save(tmp_path / "db.npy", np.ones((10, 12), np.float32))
    make(tmp_path)  # type: ignore[operator]
    code, out = run("search", "--database", str(tmp_path / "db.npy"), "--queries", str(tmp_path / "q.npy"))
    assert code == 1, out
    assert message in out and "Traceback" not in out


def test_usage_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "db.npy", np.ones((10, 12), np.float32))
    code, out = run("search", "--queries", str(tmp_path / "db.npy"))
    assert code == 2 and "--queries needs --database" in out
    code, out = run("search", "--k-near", "-1")
    assert code == 2 and "-1" in out
    (tmp_path / "db.txt").write_text("x")
    code, out = run("search", "--database", str(tmp_path / "db.txt"), "--queries", str(tmp_path / "db.txt"))
    assert code == 1 and "not a .npy file" in out


# ---- one option name per meaning, defaults from the config, --config FILE.toml ----------------------------

OLD_NAMES = {"--max-in-flight", "--timeout", "--retries", "--ann-index", "--llm-timeout", "--deadline"}
"""Names the commands used before the shared options: --llm-concurrency / --max-requests, --llm-timeout-s,
--llm-retries, --index, --deadline-s."""


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


OTHER_MEANINGS = {
    ("encoder", "export", "--encoder"): "the checkpoint to export (required; no store to default to)",
    ("index", "set-encoder", "--encoder"): "the encoder's new place (required; compared with the store's)",
    ("index", "build", "--ray"): "the cluster that encodes (a flag, optionally an address), not a search's",
    ("index", "add", "--ray"): "the cluster that encodes (a flag, optionally an address), not a search's",
    ("eval", "score", "--seed"): "the bootstrap's seed",
    ("index", "build-ann", "--seed"): "faiss training's seed",
    ("index", "submaps", "--seed"): "k-means' seed",
    ("eval", "sweep", "--k-near"): "a grid of k_near",
    ("eval", "sweep", "--k-far"): "a grid of k_far",
    ("triton", "repo", "--family"): "the chat format of the vLLM model the repository serves",
    ("search", "--k-near"): "rows of an .npy database, 0 allowed, no config",
    ("search", "--k-far"): "rows of an .npy database, no config",
}
"""Options named like a shared one that mean something else (or work outside the configuration)."""


def test_every_command_names_each_meaning_alike() -> None:
    from georag.cli.options import SHARED, SharedOption

    flags: dict[tuple[str, ...], set[tuple[str, ...]]] = defaultdict(set)
    where: dict[tuple[str, ...], set[str]] = defaultdict(set)
    helps: dict[tuple[str, ...], set[str]] = defaultdict(set)
    shared_flags = {f for s in SHARED.values() for f in s.flags.split("/")}
    for path, command in _commands(main):
        code, text = run(*path, "--help")
        assert code == 0, (path, text)
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            names = (*param.opts, *param.secondary_opts)
            assert not OLD_NAMES & set(names), (path, names)
            if not isinstance(param, SharedOption):
                for name in set(names) & shared_flags:
                    assert (*path, name) in OTHER_MEANINGS, f"{' '.join(path)} {name}: use georag.cli.options"
                continue
            assert names[0] in text, (path, names)
            if not param.keys:
                continue
            flags[param.keys].add(names)
            where[param.keys].add(" ".join(path))
            helps[param.keys].add((param.help or "").split(" [default:")[0])
            assert "[default:" in (param.help or "") or param.keys == ("store",), (path, names)
            assert param.default is None and not param.required, "the file may give it: no click default"
    assert {k: v for k, v in flags.items() if len(v) > 1} == {}, "one meaning, one option name"
    assert {k: v for k, v in helps.items() if len(v) > 1} == {}, "one meaning, one explanation"
    # The meanings several commands share.
    assert {"locate", "serve", "eval sweep"} <= where[("store",)]
    assert {"locate", "serve", "demo", "eval sweep"} <= where[("llm.url",)]
    assert {"locate", "demo", "eval sweep"} <= where[("llm.concurrency",)]
    assert {"locate", "index build", "index add", "index near-duplicates", "demo"} <= where[
        ("encoder.model",)
    ]
    assert {"locate", "serve", "demo", "eval sweep"} <= where[("search.index",)]
    assert {"locate", "eval sweep"} <= where[("exclusion.radius_km",)]
    assert where[("serve.max_requests",)] >= {"serve"} and SHARED["max-requests"].flags == "--max-requests"
    # --help shows the config's documented default.
    code, text = run("locate", "--help")
    assert "[default: 16]" in " ".join(text.split()) and "rag:K_NEAR:K_FAR" in text


def _bad_config(tmp_path: Path, text: str) -> tuple[int, str]:
    (tmp_path / "store").mkdir(exist_ok=True)
    (tmp_path / "run.toml").write_text(text)
    (tmp_path / "x.jpg").write_bytes(b"")  # a photo path that exists (a missing one is a usage error)
    args = [
        str(tmp_path / "x.jpg"),
        "--config",
        str(tmp_path / "run.toml"),
        "--store",
        str(tmp_path / "store"),
    ]
    return run("locate", *args, "--out", str(tmp_path / "p.csv"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[search]\nk_nearest = 8\n", "unknown config key 'search.k_nearest'"),
        ("[serach]\nk_near = 8\n", "unknown config key 'serach'"),
        ('[search]\nk_near = "eight"\n', "search.k_near must be an integer, got 'eight'"),
        ("[search]\nk_near = 0\n", "k_near must be an integer >= 1, got 0"),
        ("[llm]\ntimeout_s = true\n", "llm.timeout_s must be a number, got True"),
        ('[strategy]\nname = "gps"\n', "strategy must be one of rag, knn, knn-medoid, vpr-guided"),
        ('strategy = "knn"\n', "strategy must be a table of keys"),
        ('[strategy.rag]\nvariants = "rag:99"\n', "prompt variant 'rag:99'"),
        ('[strategy.rag]\nvariants = "rag:32:16"\n', "shows more references than are retrieved"),
        ("[search\nk_near = 8\n", "is not valid TOML"),
        ("k_near = 8\n", "unknown config key 'k_near'"),
    ],
)
def test_a_bad_config_file_is_a_clear_error_naming_the_file_and_key(
    tmp_path: Path, text: str, words: str
) -> None:
    code, out = _bad_config(tmp_path, text)
    assert code == 1 and words in out and "Traceback" not in out, out
    if "TOML" not in words:
        assert f"{tmp_path / 'run.toml'}: " in out, "the message names the file"


def test_a_bad_option_value_is_refused_before_anything_runs(tmp_path: Path) -> None:
    code, out = _bad_config(tmp_path, "")
    assert code == 1  # x.jpg: the (empty) store cannot be opened
    (tmp_path / "run.toml").write_text("")
    base = [
        "locate",
        str(tmp_path / "x.jpg"),
        "--store",
        str(tmp_path / "store"),
        "--out",
        str(tmp_path / "p.csv"),
    ]
    for bad, words in (
        (["--temperature", "nan"], "Invalid value for '--temperature'"),
        (["--k-near", "0"], "Invalid value for '--k-near'"),
        (["--strategy", "gps"], "Invalid value for '--strategy'"),
        (["--config", str(tmp_path / "missing.toml")], "Invalid value for '--config'"),
    ):
        code, out = run(*base, *bad)
        assert code == 2 and words in out, out
    code, out = run(*base, "--variants", "rag:32:16")
    assert code == 1 and "raise --k-near/--k-far" in out, out
    code, out = run("locate", str(tmp_path / "x.jpg"), "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "missing --store (or store in the --config file)" in out, out
    (tmp_path / "meta.csv").write_text("id,lat,lon\n")
    source = ["--dataset", "generic", "--metadata", str(tmp_path / "meta.csv"), "--images", str(tmp_path)]
    code, out = run("index", "build", *source, "--id-col", "id", "--lat-col", "lat", "--lon-col", "lon",
                    "--out", str(tmp_path / "new"))  # fmt: skip
    assert code == 2 and "missing --encoder (or [encoder] model in the --config file) for a new store" in out


def test_options_win_over_the_file_and_variants_follow_the_retrieval_depth(tmp_path: Path) -> None:
    from georag.cli.options import config_from
    from georag.errors import ConfigError

    path = tmp_path / "run.toml"
    path.write_text('store = "s"\n[search]\nk_near = 8\nk_far = 4\n[llm]\nurl = "openai://h:1/v1?model=m"\n')

    def variants(config: Config) -> str:
        return ",".join(map(str, config.strategy.rag.variants))

    config = config_from({"config": path, "k_near": None})
    assert (config.store, config.search.k_near, config.search.k_far) == ("s", 8, 4)
    assert variants(config) == "rag:8:4" and config.strategy.name == "rag"  # rag: the file names an LLM
    assert variants(config_from({"config": path, "k_far": 2})) == "rag:8:2"
    assert variants(config_from({"config": path, "variants": "zero,rag:2:2"})) == "zero,rag:2:2"
    assert config_from({"config": path, "llm": "none"}).strategy.name == "knn"  # no LLM: knn by default
    assert config_from({"config": path, "llm": "none", "strategy": "rag"}).strategy.name == "rag"
    temperature = config_from({"temperature": 0.2, "store": tmp_path}).strategy
    assert temperature.rag.sampling.temperature == temperature.vpr.sampling.temperature == 0.2
    assert config_from({"store": tmp_path}).store == str(tmp_path)
    # Variants the file names stay; an option cannot make them impossible silently.
    path.write_text('[search]\nk_near = 8\n[strategy.rag]\nvariants = "rag:4:4"\n[strategy]\nname = "knn"\n')
    config = config_from({"config": path, "k_near": 6, "llm": "openai://h:1/v1?model=m"})
    assert variants(config) == "rag:4:4" and config.strategy.name == "knn"  # the file's strategy stands
    with pytest.raises(ConfigError, match="raise --k-near/--k-far"):
        config_from({"config": path, "k_near": 2})
    kw = {"config": path, "k_near": 6, "out": "p.csv"}
    config_from(kw)
    assert kw == {"out": "p.csv"}, "the config options are taken out of the command's parameters"


def _readme_commands() -> list[list[str]]:
    """The `georag ...` lines of the README's bash blocks (continuations joined, comments cut)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0].strip()
            if line.startswith("georag "):
                out.append(shlex.split(line)[1:])
    return out


def test_the_readme_examples_use_options_the_commands_have() -> None:
    commands = _readme_commands()
    assert len(commands) > 20
    for args in commands:
        command: click.Command = main
        rest = list(args)
        while isinstance(command, click.Group) and rest:
            name = rest.pop(0) if rest[0] in command.commands else "score"  # `georag eval FILE` scores
            command = command.commands[name]
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for token in rest:
            flag = token.strip("[]").split("=")[0]
            if flag.startswith("--"):
                assert flag in known, f"georag {' '.join(args)}: {flag} is no option of {command.name}"


def test_the_readme_config_file_loads(tmp_path: Path) -> None:
    from georag.cli.options import config_from
    from georag.config import load_config

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    (tmp_path / "run.toml").write_text(example)
    config = load_config(tmp_path / "run.toml")
    assert config == config_from({"config": tmp_path / "run.toml"})
    assert (config.store, config.strategy.name, config.llm.concurrency) == ("store/", "rag", 16)


def test_every_command_with_config_reads_the_file(tmp_path: Path) -> None:
    for name in ("store", "images", "onnx"):
        (tmp_path / name).mkdir()
    for name in ("meta.csv", "truth.csv", "a.jpg"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "run.toml").write_text("bogus = 1\n")
    t = {name: str(tmp_path / name) for name in ("store", "images", "onnx", "meta.csv", "truth.csv", "a.jpg")}
    source = ["--dataset", "generic", "--metadata", t["meta.csv"], "--images", t["images"]]
    commands = {
        "locate": ["locate", t["a.jpg"], "--out", str(tmp_path / "p.csv")],
        "serve": ["serve"],
        "demo": ["demo", "--out", str(tmp_path / "demo")],
        "eval sweep": ["eval", "sweep", t["a.jpg"], "--truth", t["truth.csv"], "--out", str(tmp_path / "s")],
        "index build": ["index", "build", *source, "--out", str(tmp_path / "new")],
        "index add": ["index", "add", t["store"], *source],
        "index near-duplicates": ["index", "near-duplicates", t["store"], t["a.jpg"]],
        "triton repo": ["triton", "repo", "--out", str(tmp_path / "repo"), "--encoder-onnx", t["onnx"]],
    }
    for what, args in commands.items():
        code, out = run(*args, "--config", str(tmp_path / "run.toml"))
        assert code == 1 and "unknown config key 'bogus'" in out and "run.toml" in out, (what, out)
