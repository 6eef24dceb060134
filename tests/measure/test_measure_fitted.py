"""The fitted-profile hook: data/measurements/<gpu-key>/profile.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from energylens.hardware.fitted import DISABLE_ENV, fitted_profile_path, measurements_dir
from energylens.hardware.profile import load_gpu


def test_fitted_profile_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    assert fitted_profile_path("h100-sxm", root=tmp_path) is None
    (tmp_path / "h100-sxm").mkdir()
    profile = tmp_path / "h100-sxm" / "profile.yaml"
    profile.write_text("key: h100-sxm\n")
    assert fitted_profile_path("h100-sxm", root=tmp_path) == profile
    assert fitted_profile_path("H100-SXM ", root=tmp_path) == profile
    assert fitted_profile_path("../h100-sxm", root=tmp_path) is None
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert fitted_profile_path("h100-sxm", root=tmp_path) is None


def test_package_measurements_dir_has_readme_and_loadable_profiles() -> None:
    d = measurements_dir()
    assert (d / "README.md").is_file()
    for path in d.glob("*/profile.yaml"):  # none yet; any shipped later must load
        gpu = load_gpu(str(path))
        assert fitted_profile_path(gpu.key) == path
