"""Test-suite settings shared by every test package.

Hypothesis runs derandomized (a fixed seed per test) so a CI run is reproducible: a property that
fails, fails every time and on every machine, and a green run stays green. ``HYPOTHESIS_PROFILE=explore``
turns the randomness back on for a local bug hunt.

No test reaches the network: the Hugging Face Hub is read from an empty cache only (``HF_HUB_OFFLINE=1``,
``HF_HUB_CACHE`` a fresh temporary folder), so a developer's own cache never changes a result; the hub
tests lay out their own fake cache.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub-cache")))
    monkeypatch.delenv("HF_TOKEN", raising=False)


TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _load_tool(name: str):
    """The module of ``tools/<name>.py`` (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_tool():
    """Load a script of ``tools/`` as a module: ``load_tool("compare_public")``."""
    return _load_tool
