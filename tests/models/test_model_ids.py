"""Model ids: shipped catalogue, published variants offline, the Hugging Face Hub (fake cache), closest ids."""

from __future__ import annotations

import json

import pytest

from energylens.cli import main
from energylens.errors import UnknownNameError, UnsupportedModelError
from energylens.models import load_model
from energylens.models.names import closest_ids, core, find_variant
from energylens.models.registry import _config_dir, _load_cached, resolve_model, shipped_configs


def test_thinking_2507_resolves_offline_to_the_shipped_architecture_with_a_note(capsys):
    r = resolve_model("Qwen/Qwen3-30B-A3B-Thinking-2507")
    assert r.cfg.origin.endswith("Qwen__Qwen3-30B-A3B-Instruct-2507.json")  # shares the 2507 tag
    assert r.notes and "assumed the architecture of Qwen/Qwen3-30B-A3B-Instruct-2507" in r.notes[0]
    rc = main(["predict", "--model", "Qwen/Qwen3-30B-A3B-Thinking-2507"])
    out = capsys.readouterr().out
    assert rc == 0 and "note:" in out and "Thinking-2507" in out


@pytest.mark.parametrize("name,base,weights", [
    ("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "bf16"),
    ("Mixtral-8x7B-Instruct", "mistralai/Mixtral-8x7B-v0.1", "bf16"),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "Qwen/Qwen3-235B-A22B-Instruct-2507", "fp8"),
    ("meta-llama/Llama-3.1-405B-Instruct-FP8", "meta-llama/Llama-3.1-405B-Instruct", "fp8"),
    ("hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "meta-llama/Llama-3.1-70B-Instruct", "int4"),
    ("Qwen/Qwen3-32B-AWQ", "Qwen/Qwen3-32B", "int4"),
    ("nvidia/Qwen3-8B-NVFP4", "Qwen/Qwen3-8B", "nvfp4"),
])
def test_published_variants_take_the_variant_quantisation(name, base, weights):
    v = find_variant(name, list(shipped_configs()))
    assert v is not None and v.base == base
    m = load_model(name)
    assert m.weight_dtype == weights
    assert any("assumed the architecture" in n for n in m.info["resolution_notes"])


def test_variant_uses_a_shipped_siblings_quantisation():
    m = load_model("Qwen/Qwen3-30B-A3B-Instruct-2507-FP8")  # sibling: shipped Qwen/Qwen3-30B-A3B-FP8
    assert m.weight_format("moe.experts.w_up").scheme == "block 128x128 fp32 scales"
    assert "the shipped Qwen/Qwen3-30B-A3B-FP8" in m.info["resolution_notes"][0]
    assert m.info["max_context"] == 262144  # the 2507 architecture's context
    meta = load_model("meta-llama/Llama-3.1-405B-Instruct-FP8")  # Meta's recipe: attention and edge layers bf16
    assert meta.weight_format("attn.wq").name == "bf16" and meta.weight_format("mlp.w_up").name == "fp8"


def test_unknown_id_exits_2_with_three_closest(capsys):
    rc = main(["predict", "--model", "Qwen/Qwen9-8B-Turbo"])
    err = capsys.readouterr().err
    assert rc == 2 and "closest:" in err and "Traceback" not in err
    with pytest.raises(UnknownNameError) as exc:
        load_model("Qwen/Qwen9-8B-Turbo")
    assert len(exc.value.closest) == 3
    assert closest_ids("qwen3-8b-fp9", ["Qwen/Qwen3-8B", "openai/gpt-oss-20b", "Qwen/Qwen3-14B"])[0] == "Qwen/Qwen3-8B"
    assert core("Meta-Llama-3.1-8B-Instruct") == core("llama3.1-8b") == ("llama", "3.1", "8b")


def test_unsupported_architectures_fail_with_the_reason(capsys):
    for name in ("Qwen/Qwen3.5-27B", "nvidia/NVIDIA-Nemotron-Nano-9B-v2", "zai-org/GLM-5.1-FP8"):
        with pytest.raises(UnsupportedModelError) as exc:
            load_model(name)
        assert "not supported" in str(exc.value)
    rc = main(["predict", "--model", "Qwen/Qwen3.5-27B"])
    err = capsys.readouterr().err
    assert rc == 2 and "linear attention" in err


def _fake_hub(root, repo: str, files: dict[str, dict], missing: tuple[str, ...] = ()) -> None:
    """A Hugging Face cache laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>/)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_text(json.dumps(data))
    for name in missing:  # the hub's record of a file the repository does not have
        (base / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
        (base / ".no_exist" / commit / name).write_text("")


def test_hub_ids_from_a_fake_cache_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _load_cached.cache_clear()
    cfg = json.loads((_config_dir() / shipped_configs()["Qwen/Qwen3-8B"]).read_text())
    gptq = {**cfg, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True}}
    _fake_hub(tmp_path, "acme/qwen3-8b-gptq-custom", {"config.json": gptq}, missing=("hf_quant_config.json",))
    _fake_hub(tmp_path, "acme/qwen3-8b-modelopt", {"config.json": cfg, "hf_quant_config.json": {
        "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}}})
    m = load_model("acme/qwen3-8b-gptq-custom")
    assert m.weight_dtype == "int4" and m.dims["d"] == 4096
    assert "Hugging Face Hub cache" in m.info["resolution_notes"][0]
    n = load_model("acme/qwen3-8b-modelopt")
    assert n.weight_dtype == "nvfp4" and n.weight_format("lm_head.weight").name == "bf16"
    with pytest.raises(UnknownNameError) as exc:  # not cached, offline: no network, closest ids instead
        load_model("acme/not-cached-model")
    assert "HF_HUB_OFFLINE" in str(exc.value)
    _load_cached.cache_clear()


def test_hub_is_not_asked_when_hub_false(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    cfg = json.loads((_config_dir() / shipped_configs()["Qwen/Qwen3-8B"]).read_text())
    _fake_hub(tmp_path, "acme/only-on-hub", {"config.json": cfg}, missing=("hf_quant_config.json",))
    assert resolve_model("acme/only-on-hub").hf_id == "acme/only-on-hub"
    with pytest.raises(UnknownNameError):
        resolve_model("acme/only-on-hub", hub=False)


def test_dev_rows_all_predict_except_unsupported_architectures():
    from energylens.validate import prepare_rows, read_rows, shipped_dev_csv

    results, _, _ = prepare_rows(read_rows(shipped_dev_csv()))
    skipped = {r.row["model_id"] for r in results if r.status != "ok"}
    assert skipped == {"nvidia/NVIDIA-Nemotron-Nano-9B-v2", "nvidia/NVIDIA-Nemotron-Nano-12B-v2"}
    assert all("nemotron_h" in r.reason for r in results if r.status != "ok")
