"""Licence and citation metadata agree with each other and with the package."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

import dcac_plugin

ROOT = Path(__file__).resolve().parents[1]


def _setup_keywords() -> dict[str, object]:
    """Literal keyword arguments of the ``setup(...)`` call in setup.py (read, not executed)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            out = {}
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    continue
            return out
    raise AssertionError("setup.py has no setup(...) call")


def test_license_file_is_mit():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "MIT License"
    assert "Copyright (c) 2026 the dcac_plugin authors" in text
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_setup_licence_agrees_with_license_file():
    kw = _setup_keywords()
    assert kw["license_expression"] == "MIT"
    assert kw["license_files"] == ["LICENSE"]


def test_citation_cff_parses_and_matches_the_package():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "message", "title", "authors"):  # required by the CFF 1.2.0 schema
        assert key in cff, key
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "dcac_plugin"
    assert cff["license"] == "MIT"
    assert str(cff["version"]) == dcac_plugin.__version__
    paper = cff["preferred-citation"]
    assert paper["doi"] == "10.3390/s25020552"
    assert [a["family-names"] for a in paper["authors"]] == ["Li", "Gong"]
    assert "Pre-Trained Diffusion Models" in paper["title"]
    assert any(i["value"] == "arXiv:2502.06619" for i in paper["identifiers"])
    assert cff["references"][0]["doi"] == paper["doi"]
