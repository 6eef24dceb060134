"""The einsum spec language: loading checks every field (errors name the YAML path), hand-written
specs equal the shipped builders op for op, and load -> save -> load gives the same model."""

import math
from pathlib import Path

import pytest
import yaml

import energylens
from energylens.errors import DimensionError, EinsumError, EnergyLensError, LayoutError, SpecError
from energylens.graph.ops import Role
from energylens.models.registry import load_model
from energylens.parallel.layout import Layout
from energylens.parallel.sharding import CollectiveStep
from energylens.program import build_program
from energylens.specs import load_model_spec, model_from_dict, model_to_dict, save_model_spec
from energylens.specs.model_yaml import MAX_SPEC_BYTES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "models"

TINY = """
name: tiny
legend: {h: MLP width of the tiny model}
config: {width: 8, layers: 3}
dims: {d: width, h: 2 * width, v: 32}
tensors:
  x: {dims: btd}
pre: []
blocks:
  - name: layer
    count: layers
    ops:
      - {name: up, einsum: "btd,dh->bth", inputs: [x, w_up], weight: 1, output: hid, group: mlp}
      - {name: act, flops_per_element: 2, inputs: [hid], output: act, group: mlp}
      - {name: down, einsum: "bth,hd->btd", inputs: [act, w_down], weight: 1, output: x_next}
"""


def _spec(**changes) -> dict:
    data = yaml.safe_load(TINY)
    data.update(changes)
    return data


def _close(a: float, b: float, rel: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


# --- hand-written examples are the shipped models, op for op --------------------------------------


@pytest.mark.parametrize("path,shipped", [("llama_block.yaml", "llama3-8b"), ("moe_block.yaml", "mixtral-8x7b")])
def test_hand_written_examples_equal_the_shipped_builders(path, shipped):
    mine, ref = load_model_spec(EXAMPLES / path), load_model(shipped)
    assert mine.all_ops() == ref.all_ops()
    assert dict(mine.dims) == dict(ref.dims) and mine.n_layers == ref.n_layers
    assert mine.param_count() == ref.param_count()


def test_moe_example_predicts_as_mixtral_under_expert_parallelism():
    kw = dict(tp=2, ep=2, batch=8, prompt_len=512, output_len=32, routing="zipf:1.2")
    a = energylens.predict(str(EXAMPLES / "moe_block.yaml"), "h100-sxm", **kw)
    b = energylens.predict("mixtral-8x7b", "h100-sxm", **kw)
    assert _close(a.total_energy_j, b.total_energy_j) and _close(a.total_latency_s, b.total_latency_s)
    assert a.moe is not None and a.moe.n_experts == 8 and a.moe.top_k == 2 and a.moe.moe_layers == 32


def test_gpt_example_is_a_non_gated_gelu_mlp_with_layernorm():
    m = load_model_spec(EXAMPLES / "gpt_block.yaml")
    ops = {op.name: op for op in m.blocks[0].ops}
    assert ops["mlp.fc1"].spec.text == "btd,df->btf" and ops["mlp.fc2"].spec.text == "btf,fd->btd"
    assert "mlp.gate_proj" not in ops and ops["mlp.bias_gelu"].group == "mlp.fc1"
    assert m.dims["f"] == 4 * m.dims["d"] and m.dims["g"] == 16 and m.dims["r"] == 1
    # 12 d^2 per layer (QKV 3 d^2 + output d^2 + MLP 8 d^2) + biases + norms; embeddings v*d + n*d; head v*d
    d, f, v, n = 2048, 8192, 50304, 2048
    layer = 12 * d * d + 3 * d + d + f + d + 4 * d
    assert m.param_count() == 24 * layer + v * d + n * d + 2 * d + v * d


# --- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llama3-8b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-20b", "gemma3-12b",
                                  "llama4-maverick"])
def test_shipped_models_round_trip_exactly(name):
    m = load_model(name)
    text = save_model_spec(m)
    back = load_model_spec(text)
    assert back.all_ops() == m.all_ops()
    assert [(b.name, b.count, b.input, b.output) for b in back.blocks] == [
        (b.name, b.count, b.input, b.output) for b in m.blocks]
    assert dict(back.dims) == dict(m.dims) and dict(back.legend) == dict(m.legend)
    assert (back.weight_dtype, back.act_dtype, back.kv_dtype) == (m.weight_dtype, m.act_dtype, m.kv_dtype)
    assert save_model_spec(back) == text  # save is a fixed point


@pytest.mark.parametrize("name,kw", [
    ("llama3-8b", dict(batch=4, prompt_len=1024, output_len=64)),
    ("llama3-8b", dict(tp=2, sp=True, batch=4, prompt_len=1024, output_len=64)),
    ("qwen3-30b-a3b", dict(tp=2, ep=2, batch=8, prompt_len=512, output_len=32)),
])
def test_load_save_load_gives_the_same_predictions(tmp_path, name, kw):
    first = tmp_path / "first.yaml"
    save_model_spec(load_model(name), first)
    a = load_model_spec(first)
    second = tmp_path / "second.yaml"
    save_model_spec(a, second)
    b = load_model_spec(second)
    pa, pb, ref = (energylens.predict(m, "h100-sxm", **kw) for m in (a, b, load_model(name)))
    for p in (pb, ref):
        for phase in ("prefill", "decode"):
            x, y = getattr(pa, phase), getattr(p, phase)
            assert _close(x.energy_j, y.energy_j) and _close(x.latency_s, y.latency_s)
            assert [(o.name, o.flops) for o in x.ops] == [(o.name, o.flops) for o in y.ops]
        assert _close(pa.memory.required_bytes, p.memory.required_bytes)


def test_python_mapping_form_uses_the_same_names():
    m = model_from_dict(_spec())
    assert model_to_dict(m)["dims"] == {"d": 8, "h": 16, "v": 32}
    assert model_from_dict(model_to_dict(m)).all_ops() == m.all_ops()
    w = m.blocks[0].ops[0].inputs[1]
    assert w.role is Role.WEIGHT and w.dims == "dh"


# --- hand-counted FLOPs ---------------------------------------------------------------------------


def test_hand_counted_flops_of_a_tiny_spec():
    m = model_from_dict(_spec())
    p = energylens.predict(m, "h100-sxm", batch=2, prompt_len=4, output_len=2)
    b, t, d, h, layers = 2, 4, 8, 16, 3
    up = 2 * b * t * d * h  # 2 x product of all dims of the contraction
    act = 2 * b * t * h  # 2 FLOPs per output element
    down = 2 * b * t * h * d
    by_name = {o.name: o for o in p.prefill.ops}
    assert set(by_name) == {"layer.mlp", "layer.down"}  # up + act fused into one kernel (group mlp)
    assert by_name["layer.mlp"].flops == layers * (up + act)
    assert by_name["layer.down"].flops == layers * down
    # decode: t = 1 per step, two steps
    assert sum(o.flops for o in p.decode.ops) == 2 * layers * (up + act + down) / t


# --- sharding overrides change the derived collectives ----------------------------------------


def _collectives(model, **layout) -> list[tuple[str, str, str]]:
    prog = build_program(model, Layout(**layout))
    return [(st.kind, st.axis, st.name) for _, steps in prog.blocks for st in steps if isinstance(st, CollectiveStep)]


def test_sharding_a_new_letter_over_tp_gives_one_all_reduce_per_mlp():
    replicated = model_from_dict(_spec())  # h is not in the Megatron default map: the MLP stays whole
    assert _collectives(replicated, tp=2) == []
    sharded = model_from_dict(_spec(sharding={"h": "tp"}))
    assert _collectives(sharded, tp=2) == [("all_reduce", "tp", "down:all_reduce")]
    # sequence parallelism: the steady-state layer gathers its tokens before up, scatters them after down
    assert _collectives(sharded, tp=2, sp=True) == [("all_gather", "tp", "up:all_gather"),
                                                    ("reduce_scatter", "tp", "down:reduce_scatter")]
    p = energylens.predict(sharded, "h100-sxm", tp=2, batch=2, prompt_len=4, output_len=1)
    assert [(c.kind, c.count) for c in p.prefill.collectives] == [("all_reduce", 3)]  # one per layer


def test_unsharding_f_removes_the_mlp_all_reduce():
    llama = load_model_spec(EXAMPLES / "llama_block.yaml")
    assert [n for _, _, n in _collectives(llama, tp=2)] == ["attn.o_proj:all_reduce", "mlp.down_proj:all_reduce"]
    data = yaml.safe_load((EXAMPLES / "llama_block.yaml").read_text())
    data["sharding"] = {"f": "none"}
    whole_mlp = model_from_dict(data)
    assert [n for _, _, n in _collectives(whole_mlp, tp=2)] == ["attn.o_proj:all_reduce"]
    a = energylens.predict(llama, "h100-sxm", tp=2, batch=4, prompt_len=512, output_len=8)
    b = energylens.predict(whole_mlp, "h100-sxm", tp=2, batch=4, prompt_len=512, output_len=8)
    assert b.memory.weights_bytes > a.memory.weights_bytes  # every rank holds the whole MLP


def test_sharded_letter_must_divide():
    m = model_from_dict(_spec(dims={"d": 8, "h": 12, "v": 32}, sharding={"h": "tp"}))
    with pytest.raises(LayoutError, match="dimension h=12"):
        energylens.predict(m, "h100-sxm", tp=8, batch=1, prompt_len=4, output_len=1)


# --- overlap rules in the spec ------------------------------------------------------------------


def test_overlap_rules_of_a_spec_apply_to_predict():
    from energylens.overlap import OverlapPlan, predict_with_overlap

    data = yaml.safe_load((EXAMPLES / "llama_block.yaml").read_text())
    data["overlap"] = [{"collective": "*:all_reduce", "chunks": 4, "comm_sms": 16}]
    m = model_from_dict(data)
    kw = dict(tp=4, batch=2, prompt_len=4096, output_len=4)
    p = energylens.predict(m, "h100-sxm", **kw)
    ref = predict_with_overlap(m, "h100-sxm", plans=OverlapPlan("*:all_reduce", chunks=4, comm_sms=16), **kw)
    assert _close(p.prefill.energy_j, ref.prefill.energy_j) and _close(p.prefill.latency_s, ref.prefill.latency_s)
    assert _close(p.decode.latency_s, ref.decode.latency_s)
    ov = p.extra["overlap"]
    assert ov["prefill"]["sequential_latency_s"] == pytest.approx(ref.baseline.prefill.latency_s, rel=1e-12)
    assert ov["prefill"]["latency_s"] < ov["prefill"]["sequential_latency_s"] and ov["prefill"]["pairs"]


# --- errors name the YAML path -------------------------------------------------------------------


def _ops(*ops) -> list:
    return [{"name": "layer", "count": 1, "ops": list(ops)}]


UP = {"name": "up", "einsum": "btd,dh->bth", "inputs": ["x", "w_up"], "weight": 1, "output": "hid"}


@pytest.mark.parametrize("changes,error,field,needle", [
    (dict(blocks=_ops({**UP, "einsum": "btd,dh->btq"})), DimensionError, "blocks[0].ops[0].einsum dimension",
     "known dimension"),
    (dict(blocks=_ops({**UP, "einsum": "btd,dh"})), EinsumError, "blocks[0].ops[0].einsum", "'->'"),
    (dict(blocks=_ops({**UP, "inputs": ["x"], "weight": 0})), SpecError, "blocks[0].ops[0].inputs", "2 tensors"),
    (dict(blocks=_ops({**UP, "weight": 5})), SpecError, "blocks[0].ops[0].weight", "index"),
    (dict(blocks=_ops({**UP, "colour": "red"})), SpecError, "blocks[0].ops[0].colour", "known field"),
    (dict(blocks=_ops({**UP, "flops_per_element": 2})), SpecError, "blocks[0].ops[0]", "exactly one of"),
    (dict(blocks=_ops({**UP, "attrs": {"tokens": "first"}})), SpecError, "blocks[0].ops[0].attrs.tokens", "last"),
    (dict(blocks=_ops({**UP, "attrs": {"speed": 1}})), SpecError, "blocks[0].ops[0].attrs.speed", "known field"),
    (dict(blocks=_ops({"name": "n", "flops_per_element": 1, "inputs": ["nowhere"], "output": "y"})), SpecError,
     "blocks[0].ops[0].inputs[0]", "dims are known"),
    (dict(blocks=_ops({"name": "n", "flops_per_element": -1, "inputs": ["x"], "output": "y"})), SpecError,
     "blocks[0].ops[0].flops_per_element", ">= 0"),
    (dict(blocks=_ops({**UP, "inputs": ["x", {"name": "w_up", "role": "bias"}]})), SpecError,
     "blocks[0].ops[0].inputs[1].role", "weight"),
    (dict(blocks=_ops({**UP, "inputs": ["x", {"name": "w_up", "dims": "hd"}]})), SpecError,
     "blocks[0].ops[0].inputs[1].dims", "operand"),
    (dict(dims={"d": "width", "h": "2 * widht", "v": 32}), SpecError, "dims.h", "'widht' is not one"),
    (dict(dims={"d": "width / 3", "h": 16, "v": 32}), SpecError, "dims.d", "whole number"),
    (dict(dims={"d": 8, "h": 16, "v": 32, "z": 4}), SpecError, "dims.z", "legend"),
    (dict(dims={"d": 8, "h": 16, "v": 32, "b": 4}), SpecError, "dims.b", "workload"),
    (dict(dims={"d": 8, "v": 32}), SpecError, "dims", "h has none"),
    (dict(sharding={"h": "pp"}), SpecError, "sharding.h", "tp, ep or none"),
    (dict(sharding={"q": "tp"}), SpecError, "sharding.q", "a dimension of dims"),
    (dict(overlap=[{"collective": "*", "chunks": 0, "comm_sms": 8}]), SpecError, "overlap[0].chunks", "[1, 64]"),
    (dict(overlap=[{"collective": "*", "size": 3}]), SpecError, "overlap[0].size", "known field"),
    (dict(dtypes={"weight": "fp9"}), SpecError, "dtypes.weight", "bf16"),
    (dict(tensors={"x": {"dims": "btd", "role": "weights"}}), SpecError, "tensors.x.role", "weight"),
    (dict(blocks=[]), SpecError, "blocks", "at least one block"),
    (dict(blocks=[{"name": "layer", "count": "layers - 3", "ops": [UP]}]), SpecError, "blocks[0].count", "positive"),
    (dict(name=""), SpecError, "name", "non-empty"),
    (dict(author="me"), SpecError, "author", "known field"),
    (dict(legend={"B": "big"}), SpecError, "legend.B", "lowercase"),
])
def test_errors_name_the_field(changes, error, field, needle):
    with pytest.raises(error) as exc:
        model_from_dict(_spec(**changes))
    assert exc.value.field == field, str(exc.value)
    assert needle in str(exc.value)


def test_file_errors_carry_the_file_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace('"btd,dh->bth"', '"btd,dh->btz"'))
    with pytest.raises(EnergyLensError) as exc:
        load_model_spec(bad)
    assert exc.value.field.startswith(f"{bad}: blocks[0].ops[0].einsum")


@pytest.mark.parametrize("text,needle", [
    ("name: [unclosed", "valid YAML"),
    ("a: &anchor {x: 1}\nb: *anchor\n", "anchors/aliases"),
    ("- just\n- a list\n", "a mapping"),
    ("name: !!python/object:os.system {}\n", "valid YAML"),
])
def test_unsafe_or_malformed_yaml_is_refused(text, needle):
    with pytest.raises(SpecError, match=needle):
        load_model_spec(text + "\n")


def test_oversized_file_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_SPEC_BYTES + "\n" + TINY)
    with pytest.raises(SpecError, match="at most"):
        load_model_spec(big)


def test_missing_spec_file_is_one_error():
    with pytest.raises(SpecError, match="existing"):
        load_model("no/such/model.yaml")
