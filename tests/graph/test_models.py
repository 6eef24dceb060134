import math

import pytest

from energylens.errors import SpecError, UnknownNameError
from energylens.models import load_model


@pytest.mark.parametrize("name,params_b", [
    ("llama3-8b", 8.03), ("llama3-70b", 70.55), ("llama3.1-405b", 405.85), ("qwen3-8b", 8.19), ("qwen3-32b", 32.76),
])
def test_parameter_counts_match_published(name, params_b):
    # Hand-computed counts in shared/reference/hf-configs/SOURCES.md (embeddings and head included).
    assert load_model(name).param_count() / 1e9 == pytest.approx(params_b, abs=0.01)


def test_llama3_8b_dimensions():
    m = load_model("llama3-8b")
    assert dict(m.dims) == {"d": 4096, "g": 8, "r": 4, "k": 128, "v": 128256, "f": 14336}
    assert m.n_layers == 32


def test_hf_ids_and_paths(tmp_path):
    assert load_model("meta-llama/Llama-3.1-70B-Instruct").dims["d"] == 8192
    assert load_model("META-LLAMA/LLAMA-3.1-70B-INSTRUCT").n_layers == 80
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, '
                   '"num_key_value_heads": 2, "num_hidden_layers": 3, "vocab_size": 1000}')
    m = load_model(str(cfg))
    assert m.n_layers == 3 and m.dims["k"] == 64


def test_unknown_model_lists_known():
    with pytest.raises(UnknownNameError) as exc:
        load_model("llama9-1t")
    assert "llama3-8b" in str(exc.value)


def test_bad_config_fields(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "hidden_size": -5, "intermediate_size": 512, "num_attention_heads": 4, '
                   '"num_hidden_layers": 3, "vocab_size": 1000}')
    with pytest.raises(SpecError) as exc:
        load_model(str(cfg))
    assert "hidden_size" in str(exc.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError):
        load_model(str(bad))


def test_layer_written_once_repeated():
    m = load_model("llama3-70b")
    assert len(m.blocks) == 1 and m.blocks[0].count == 80
    per_layer = m.weight_elements(m.blocks[0].ops)
    d, f, g, r, k = (m.dims[c] for c in "dfgrk")
    assert per_layer == d * g * r * k * 2 + 2 * d * g * k + 3 * d * f + 2 * d
    assert math.isclose(m.param_count(), 80 * per_layer + 2 * m.dims["v"] * d + d)
