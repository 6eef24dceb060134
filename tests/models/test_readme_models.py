"""The README's "Models and quantisation" commands run as written (offline) and its figures hold."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from energylens.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _section_commands() -> list[list[str]]:
    text = README.read_text()
    body = text.split("## Models and quantisation", 1)[1].split("\n## ", 1)[0]
    block = body.split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0])[1:] for line in block.splitlines() if line.startswith("energylens ")]


@pytest.mark.parametrize("args", _section_commands(), ids=lambda a: " ".join(a[:3]))
def test_readme_models_commands_run_offline(args, capsys):
    assert main([*args, "--json"]) == 0
    json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("args,weights_gb", [
    (["--model", "Qwen/Qwen3-8B"], 16.4), (["--model", "Qwen/Qwen3-8B-FP8"], 9.4),
    (["--model", "meta-llama/Llama-3.1-70B-Instruct", "--tp", "4"], 35.3),
    (["--model", "nvidia/Llama-3.1-70B-Instruct-FP8", "--tp", "4"], 18.2),
    (["--model", "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", "--tp", "4"], 9.9),
    (["--model", "openai/gpt-oss-120b"], 65.2),
    (["--model", "nvidia/Qwen3-235B-A22B-NVFP4", "--gpu", "b200", "--tp", "4"], 33.6),
])
def test_readme_weight_figures(args, weights_gb, capsys):
    assert main(["predict", *args, "--input-len", "1024", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["memory"]["weights_bytes"] / 1e9 == pytest.approx(weights_gb, abs=0.05)
