import yaml

from energylens.hardware import profile


def test_fitted_profile_becomes_the_default(tmp_path, monkeypatch):
    base = profile.load_gpu("h100-sxm").to_dict()
    base["quantities"]["idle_power"] = {"value": 99.0, "unit": "W", "kind": "fitted", "source": "records/x.json"}
    fitted = tmp_path / "h100-sxm" / "profile.yaml"
    fitted.parent.mkdir()
    fitted.write_text(yaml.safe_dump(base))
    import energylens.hardware.fitted as f

    monkeypatch.setattr(f, "measurements_dir", lambda: tmp_path)
    profile._builtin.cache_clear()
    try:
        gpu = profile.load_gpu("h100")
        assert gpu.idle_power_w == 99.0 and gpu.quantities["idle_power"].kind == "fitted"
        assert profile.load_gpu("a100-sxm-80gb").quantities["idle_power"].kind != "fitted"
        monkeypatch.setenv("ENERGYLENS_NO_FITTED_PROFILES", "1")
        profile._builtin.cache_clear()
        assert profile.load_gpu("h100").idle_power_w != 99.0
    finally:
        profile._builtin.cache_clear()
