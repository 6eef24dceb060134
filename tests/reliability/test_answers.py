"""Regression tests for the wrong or inconsistent answers of issue 18."""

from __future__ import annotations

import pytest

import energylens
from energylens.cost.collectives import default_comm_sms
from energylens.hardware import load_gpu
from energylens.overlap.search import sweep_overlap


@pytest.mark.parametrize("pp, batch, phase", [(2, 4, "prefill"), (4, 8, "prefill"), (2, 8, "decode"), (1, 2, "prefill")])
def test_overlap_row_with_one_chunk_at_nccl_sms_equals_the_baseline_with_pipeline_microbatches(pp, batch, phase):
    """C = 1 is no overlap; at NCCL's default SM count it is the sequential baseline exactly. With pp > 1 and
    several micro-batches it was +25 ... +93 % (the GEMMs were re-costed at the whole batch, not the micro-batch)."""
    g = load_gpu("h100-sxm")
    k = int(default_comm_sms(g))
    sw = sweep_overlap("llama3-70b", g, phase=phase, comm_sms=(k, 16), chunks=(1, 2), batch=batch, prompt_len=512,
                       output_len=16, tp=4, pp=pp)
    rows = {(r["comm_sms"], r["chunks"]): r for r in sw.rows()[1:]}
    assert rows[(k, 1)]["latency_change"] == pytest.approx(0.0, abs=1e-12)
    assert rows[(k, 1)]["energy_change"] == pytest.approx(0.0, abs=1e-12)
    assert abs(rows[(16, 1)]["latency_change"]) < 0.03  # only the collective's SMs differ


def test_collective_bytes_are_per_call_and_counts_cover_the_phase():
    p = energylens.predict("llama3-70b", tp=8, batch=4, prompt_len=512, output_len=100)
    d = 8192 * 2  # hidden size x bf16 bytes
    pre = {c.name: c for c in p.prefill.collectives}["embed:all_reduce"]
    dec = {c.name: c for c in p.decode.collectives}["embed:all_reduce"]
    assert pre.bytes == 4 * 512 * d and pre.count == 1
    assert dec.bytes == 4 * 1 * d  # one new token per sequence per step (it was summed over the 100 steps)
    assert dec.count == 100  # one call per step, over the 100 decode steps
    assert dec.latency_s / dec.count == pytest.approx(dec.latency_s / 100)
    ops = {o.name: o for o in p.decode.ops}
    assert ops["lm_head"].count == 8 * 100  # 8 GPUs x 100 steps


def test_predict_interval_contains_its_own_estimate():
    p = energylens.predict("llama3-70b", "h100-sxm", tp=8, batch=16, prompt_len=2048, output_len=256)
    for key, value in (("total_energy_j", p.total_energy_j), ("total_latency_s", p.total_latency_s)):
        iv = p.extra["interval"][key]
        assert iv["low"] <= iv["estimate"] <= iv["high"]
        assert value < iv["low"]  # the per-op figure is kernels only: below what vLLM measures


def test_three_j_per_token_figures_are_defined_and_ordered():
    p = energylens.predict("llama3.1-70b", "h100-sxm", tp=8, batch=64, prompt_len=1024, output_len=256)
    assert p.energy_per_output_token_j == pytest.approx(p.total_energy_j / (64 * 256))
    assert p.to_dict()["total"]["energy_per_output_token_j"] == pytest.approx(p.energy_per_output_token_j)
    assert p.decode.energy_per_token_j < p.energy_per_output_token_j  # decode alone leaves out the prefill
    from energylens.serving import serve

    s = serve("llama3.1-70b", "h100-sxm", tp=8, batch=64, input_len=1024, output_len=256)
    assert s.energy_per_output_token_j > p.decode.energy_per_token_j  # runtime overheads and prefill included
    assert energylens.predict("llama3-8b", output_len=0).energy_per_output_token_j == 0.0


def test_help_texts_say_which_j_per_token():
    from typer.testing import CliRunner

    from energylens.cli import _load_commands, app

    _load_commands()
    out = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "200"}).stdout
    assert "decode J/token" in out and "whole request" in out and "energylens serve" in out
    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).stdout
    assert "deployment" in out and "static-batch" in out


def test_sweep_overlap_rows_with_one_chunk_match_sequential_rows_under_pipeline_parallelism():
    """The sweep's overlap axis goes through the same re-costing: with pp = 2 and two micro-batches its
    C = 1 rows at NCCL's SM count equal the sequential rows (they inflated the spread table before)."""
    import numpy as np

    from energylens.sweep import SweepSpec, run_sweep

    k = int(default_comm_sms(load_gpu("h100-sxm")))
    t = run_sweep(SweepSpec(models=["llama3-70b"], gpus=["h100-sxm"], tp=[4], pp=[2], batch=[4, 8], prompt_len=[512],
                            output_len=[16], overlap_comm_sms=[0, k], overlap_chunks=[1]))
    seq = t.filter(t["overlap_comm_sms"] == 0)
    one = t.filter(t["overlap_comm_sms"] == k)
    for col in ("prefill_latency_s", "prefill_energy_j", "decode_latency_s", "decode_energy_j"):
        np.testing.assert_allclose(one[col], seq[col], rtol=1e-12)


def test_disagg_refuses_a_pool_whose_weights_do_not_fit():
    from energylens.disagg import Pool, compare
    from energylens.errors import LayoutError

    with pytest.raises(LayoutError, match="GiB"):
        compare("llama3.1-405b", colocated_pool=Pool(tp=1), prefill_pool=Pool(tp=8), decode_pool=Pool(tp=8),
                concurrency=8, prompt_len=1024, output_len=128, max_gpus=32)
