import json

import pytest

from energylens.cli import main


def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_predict_json_schema(capsys):
    rc, out, _ = run(capsys, "predict", "--model", "llama3-8b", "--gpu", "h100-sxm", "--batch", "4", "--json")
    assert rc == 0
    d = json.loads(out)
    for phase in ("prefill", "decode"):
        assert {"energy_j", "latency_s", "avg_power_w"} <= set(d[phase])
    assert d["decode"]["energy_per_token_j"] > 0
    assert {"energy_j", "latency_s"} <= set(d["total"])
    assert {"name", "kind", "flops", "bytes", "latency_s", "energy_j", "bound"} <= set(d["ops"][0])
    assert d["per_gpu"]["prefill"][0]["busy_s"] > 0


@pytest.mark.parametrize("model,gpu", [("llama3-8b", "h100-sxm"), ("llama3-70b", "a100-sxm-80gb"), ("llama3-70b", "h200")])
def test_predict_answers_for_the_acceptance_pairs(capsys, model, gpu):
    rc, out, _ = run(capsys, "predict", "--model", model, "--gpu", gpu, "--json", "--tp", "4" if "70b" in model else "1")
    assert rc == 0 and json.loads(out)["total"]["energy_j"] > 0


def test_rich_summary(capsys):
    rc, out, _ = run(capsys, "predict", "--model", "llama3-70b", "--tp", "8", "--top", "3")
    assert rc == 0 and "Summary" in out and "Collectives" in out and "fits" in out


@pytest.mark.parametrize("args,needle", [
    (["predict", "--gpu", "h9000"], "known values are"),
    (["predict", "--model", "nope"], "closest:"),
    (["predict", "--batch", "0"], "batch"),
    (["predict", "--model", "llama3-70b", "--tp", "3"], "tp"),
    (["predict", "--dtype", "int2"], "dtype"),
])
def test_bad_input_exit_2_without_traceback(capsys, args, needle):
    rc, out, err = run(capsys, *args)
    assert rc == 2
    assert needle in err and "Traceback" not in err


def test_usage_error_exit_2(capsys):
    rc, _, err = run(capsys, "predict", "--no-such-flag")
    assert rc == 2 and "No such option" in err


def test_gpus_and_models_lists(capsys):
    assert run(capsys, "gpus")[0] == 0
    rc, out, _ = run(capsys, "models")
    assert rc == 0 and "llama3-8b" in out
