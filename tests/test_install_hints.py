"""Every hint for a missing optional package works without the package index knowing this project: it
names the packages, or the extra from a checkout, never a distribution called georag (another project
holds that name on the index)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from georag.errors import DISTRIBUTION, extra_hint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_distribution_is_not_the_unrelated_georag() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["name"] == DISTRIBUTION == "georag-vlm"
    assert meta["scripts"] == {"georag": "georag.cli:main"}


def test_the_hints_name_real_extras_and_packages() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    text = extra_hint("faiss", "faiss-cpu")
    assert text.startswith("pip install faiss-cpu") and "'.[faiss]'" in text and "faiss" in extras


def test_no_file_tells_anyone_to_install_the_unrelated_georag() -> None:
    wrong = re.compile(r"pip install\s+['\"]?georag(?![-\w])")
    for path in [ROOT / "README.md", *ROOT.glob("python/georag/**/*.py"), *ROOT.glob("**/README.md")]:
        if ".ci-" in str(path) or "/build/" in str(path):
            continue
        text = path.read_text(encoding="utf-8")
        assert not wrong.search(text), f"{path} tells a user to install the unrelated georag"
