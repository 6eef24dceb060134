"""The shipped example specs predict from the CLI, and every command of docs/einsum-spec.md runs
(where the guide shows a command's output, the output is checked verbatim)."""

import json
import re
import shlex
from pathlib import Path

import pytest

from energylens.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "einsum-spec.md"
EXAMPLES = sorted((ROOT / "examples" / "models").glob("*.yaml"))


def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_three_examples_ship():
    assert {p.name for p in EXAMPLES} >= {"llama_block.yaml", "gpt_block.yaml", "moe_block.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_predicts_from_the_cli(capsys, path):
    rc, out, err = run(capsys, "predict", "--model", str(path), "--tp", "2", "--batch", "4", "--prompt-len", "512",
                       "--output-len", "16", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["total"]["energy_j"] > 0 and d["total"]["latency_s"] > 0
    assert any(c["kind"] == "all_reduce" and c["phase"] == "prefill" for c in d["collectives"])


def test_a_bad_spec_is_one_line_and_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples" / "models" / "llama_block.yaml").read_text().replace(
        '"btd,dgrk->btgrk"', '"btd,dgrk->btgrq"'))
    rc, out, err = run(capsys, "predict", "--model", str(bad))
    assert rc == 2 and "Traceback" not in err
    assert f"{bad}: blocks[0].ops[2].einsum" in err.replace("\n", "")  # (the console wraps long lines)


def test_export_then_predict_matches_the_shipped_model(capsys, tmp_path):
    out_file = tmp_path / "llama.yaml"
    rc, _, err = run(capsys, "spec", "export", "llama3-8b", "--out", str(out_file))
    assert rc == 0, err
    a = run(capsys, "predict", "--model", str(out_file), "--batch", "2", "--json")
    b = run(capsys, "predict", "--model", "llama3-8b", "--batch", "2", "--json")
    ta, tb = json.loads(a[1])["total"], json.loads(b[1])["total"]
    assert ta == tb


def _doc_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", DOC.read_text(), flags=re.S)]


def _doc_cases() -> list[tuple[str, str | None]]:
    """(command, expected output or None) for each command line of a bash block of the guide."""
    blocks = _doc_blocks()
    cases = []
    for i, (lang, body) in enumerate(blocks):
        if lang != "bash":
            continue
        lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip()]
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        text = DOC.read_text()
        expected = None
        if following and following[0] == "text" and len(lines) == 1:
            end_of_bash = text.index(f"```bash\n{body}```") + len(f"```bash\n{body}```")
            if text[end_of_bash:].lstrip().startswith("```text"):
                expected = following[1]
        cases += [(ln, expected) for ln in lines]
    return cases


def test_doc_has_commands_and_shown_outputs():
    cases = _doc_cases()
    assert len(cases) >= 8 and sum(e is not None for _, e in cases) >= 4
    assert all(cmd.startswith("energylens ") for cmd, _ in cases)


@pytest.mark.parametrize("command,expected", _doc_cases(), ids=[c for c, _ in _doc_cases()])
def test_doc_command_runs(capsys, tmp_path, monkeypatch, command, expected):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    if "my_llama.yaml" in command and "export" not in command:
        assert main(["spec", "export", "llama3-8b", "--out", "my_llama.yaml"]) == 0
        capsys.readouterr()
    rc, out, err = run(capsys, *shlex.split(command)[1:])
    assert rc == 0, err
    if expected is not None:
        assert out.strip() == expected.strip()


def test_doc_python_example_runs():
    code = next(body for lang, body in _doc_blocks() if lang == "python")
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - our own guide's example
    p = scope["p"]
    assert p.total_energy_j > 0 and p.layout["tp"] == 2
    assert [c.kind for c in p.prefill.collectives] == ["all_reduce"]
