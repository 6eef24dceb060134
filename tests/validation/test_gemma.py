"""Gemma 3 builder: hand-counted shapes, 5:1 local/global layers, sliding window, tied embeddings."""

import numpy as np
import pytest

from energylens.models import load_model


@pytest.mark.parametrize("name,layers,local,glob,head_dim,text_params_b", [
    # SOURCES.md: 12.18 B / 27.43 B with the SigLIP tower (~0.42 B); text decoder alone below.
    ("google/gemma-3-12b-it", 48, 40, 8, 256, 11.766),
    ("google/gemma-3-27b-it", 62, 52, 10, 128, 27.009),
])
def test_layer_pattern_and_parameters(name, layers, local, glob, head_dim, text_params_b):
    m = load_model(name)
    counts = {b.name: b.count for b in m.blocks}
    assert counts == {"local": local, "global": glob} and m.n_layers == layers
    assert m.dims["k"] == head_dim and m.dims["v"] == 262208
    assert m.info["tied_embeddings"] is True
    assert m.param_count() / 1e9 == pytest.approx(text_params_b, abs=0.002)


def test_hand_count_per_layer_weights():
    m = load_model("gemma3-12b")
    d, f, g, r, k = (m.dims[c] for c in "dfgrk")
    per_layer = m.weight_elements(m.blocks[0].ops)
    # q, k, v, o projections + gate/up/down + 4 RMSNorms over d + q/k norms over head_dim
    assert per_layer == d * g * r * k * 2 + 2 * d * g * k + 3 * d * f + 4 * d + 2 * k
    assert m.param_count() == 48 * per_layer + m.dims["v"] * d + d  # tied table counted once, final norm


def test_local_layers_read_at_most_the_window():
    from energylens.cost.phase import evaluate_phase
    from energylens.hardware import load_gpu
    from energylens.parallel.layout import Layout
    from energylens.program import build_program

    m = load_model("gemma3-12b")
    lay = Layout()
    prog = build_program(m, lay)
    gpu = load_gpu("h100-sxm")

    def flash_bytes(s):
        pa = evaluate_phase(m, gpu, lay, prog, {"b": np.asarray(4.0), "t": np.asarray(1.0), "s": np.asarray(s)},
                            np.asarray(1.0), decode=False)
        return {sec: float(r.bytes) for sec, r in pa.kernels if r.name.endswith("attn.flash")}

    short, long_ = flash_bytes(1024.0), flash_bytes(8192.0)
    assert long_["local"] == pytest.approx(short["local"], rel=1e-9)  # window caps the KV read
    assert long_["global"] == pytest.approx(8 * short["global"], rel=0.01)  # global reads all keys
