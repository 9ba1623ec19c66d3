"""The request path runs compiled (scripts/build_native.py), from the sources in the tree."""

from __future__ import annotations

import importlib

import pytest

from scripts import build_native


@pytest.mark.parametrize("module", build_native.MODULES)
def test_each_request_path_module_is_loaded_compiled(module: str) -> None:
    loaded = importlib.import_module(module.removesuffix(".py").replace("/", "."))
    assert loaded.__file__ is not None
    assert loaded.__file__.endswith(".so"), f"{module} runs interpreted: build it"


def test_the_compiled_modules_match_their_sources() -> None:
    assert build_native.is_current()


def test_the_fingerprint_follows_every_source(monkeypatch: pytest.MonkeyPatch) -> None:
    before = build_native.fingerprint()
    monkeypatch.setattr(build_native, "MODULES", build_native.MODULES[:-1])
    assert build_native.fingerprint() != before
