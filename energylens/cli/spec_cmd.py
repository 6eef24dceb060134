"""``energylens spec``: the einsum spec language from the command line (``docs/einsum-spec.md``).

* ``spec show MODEL``: the per-rank program a layout derives: each op's sharding and every collective,
  with the reason it is there (``--collectives`` lists the collectives only);
* ``spec export MODEL``: a shipped (or any) model written as a spec YAML file;
* ``spec check FILE``: load a spec file and summarise it (dims, blocks, parameters).
"""

from __future__ import annotations

from dataclasses import replace

import typer

from energylens.cli import app
from energylens.errors import SpecError

spec_app = typer.Typer(help="Write, check and inspect einsum model specs (docs/einsum-spec.md).",
                       no_args_is_help=True, add_completion=False)
app.add_typer(spec_app, name="spec")


def _overrides(model, shard: list[str] | None):
    if not shard:
        return model
    sharding = dict(model.sharding)
    for item in shard:
        letter, sep, axis = item.partition("=")
        if not sep or len(letter.strip()) != 1:
            raise SpecError("--shard", item, "LETTER=AXIS, e.g. f=tp or f=none")
        axis = axis.strip()
        sharding[letter.strip()] = None if axis in ("none", "") else axis
    return replace(model, sharding=sharding)


def _shards(shard) -> str:
    return ",".join(f"{d}:{a}" for d, a in sorted(dict(shard).items())) or "-"


def program_lines(model, layout, *, collectives_only: bool = False) -> list[str]:
    """The derived per-rank program as text: one line per op (and per collective)."""
    from energylens.parallel.layout import model_axes
    from energylens.parallel.sharding import CollectiveStep
    from energylens.program import active_axes, build_program

    program = build_program(model, layout)
    axes = active_axes(model, layout)
    lines = [f"{model.name}: tp={layout.tp} pp={layout.pp} dp={layout.dp} ep={layout.ep} "
             f"sp={'on' if layout.sp else 'off'}; sharded dims: "
             + (" ".join(f"{d}->{a}" for d, a in sorted(axes.items())) or "none (every axis has degree 1)")]
    unused = sorted(set(model_axes(model, layout)) - set(axes))
    if unused and not axes:
        lines[0] += f" (mapped: {' '.join(unused)})"
    sections = [("pre", 1, program.pre)] + [(b.name, b.count, steps) for b, steps in program.blocks] + [
        ("post", 1, program.post)]
    for name, count, steps in sections:
        if not steps:
            continue
        lines.append(f"{name} x{count}")
        n_coll = 0
        for st in steps:
            if isinstance(st, CollectiveStep):
                n_coll += 1
                along = f" along {st.dim}" if st.dim else ""
                lines.append(f"  => {st.kind} over {st.axis}{along}: {st.tensor.name} ({st.reason})")
            elif not collectives_only:
                lines.append(f"  {st.op.name:<28} {st.op.kind:<11} {_shards(st.shard)}")
        if collectives_only and not n_coll:
            lines.append("  (no collectives)")
    return lines


@spec_app.command("show")
def show_command(
    model: str = typer.Argument(..., help="Spec .yaml file, short name, Hugging Face id or config.json path."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel degree."),
    dp: int = typer.Option(1, "--dp", help="Data-parallel replicas."),
    ep: int = typer.Option(1, "--ep", help="Expert-parallel degree."),
    sp: bool = typer.Option(False, "--sp", help="Sequence parallelism."),
    shard: list[str] = typer.Option(None, "--shard", help="Override a dim's mesh axis: LETTER=tp|ep|none "
                                                          "(repeatable)."),
    collectives: bool = typer.Option(False, "--collectives", help="List only the derived collectives."),
) -> None:
    """Print the per-rank program a layout derives: op sharding and collectives with their reasons."""
    from energylens.models.registry import load_model
    from energylens.parallel.layout import Layout, check_layout

    m = _overrides(load_model(model), shard)
    layout = Layout(tp=tp, pp=pp, dp=dp, ep=ep, sp=sp)
    check_layout(m, layout, strict=True)
    for line in program_lines(m, layout, collectives_only=collectives):
        typer.echo(line)


@spec_app.command("export")
def export_command(
    model: str = typer.Argument(..., help="Short name, Hugging Face id, config.json path or spec file."),
    out: str = typer.Option(None, "--out", "-o", help="Write to this .yaml file instead of standard output."),
) -> None:
    """Write a model as an einsum spec YAML file (loading it back gives the same model)."""
    from energylens.models.registry import load_model
    from energylens.specs.model_yaml import SPEC_SUFFIXES, save_model_spec

    if out is not None and not out.lower().endswith(SPEC_SUFFIXES):
        raise SpecError("--out", out, "a file name ending in .yaml or .yml")
    text = save_model_spec(load_model(model), out)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {out}")


@spec_app.command("check")
def check_command(path: str = typer.Argument(..., help="Spec .yaml file.")) -> None:
    """Load a spec file (every field checked) and summarise it."""
    from energylens.hardware.profile import DTYPE_BYTES
    from energylens.specs.model_yaml import load_model_spec

    m = load_model_spec(path)
    params = m.param_count()
    typer.echo(f"{m.name}: {params / 1e9:.3g} B parameters ({params * DTYPE_BYTES[m.weight_dtype] / 1e9:.3g} GB "
               f"of {m.weight_dtype} weights), {m.n_layers} layers")
    typer.echo("dims: " + " ".join(f"{k}={v}" for k, v in m.dims.items()))
    for b in m.blocks:
        typer.echo(f"block {b.name} x{b.count}: {len(b.ops)} ops, "
                   f"{len({op.group or op.name for op in b.ops})} kernels")
    if m.sharding:
        typer.echo("sharding: " + " ".join(f"{k}->{v or 'none'}" for k, v in m.sharding.items()))
    for p in m.overlap:
        typer.echo(f"overlap: {p.collective} with {p.compute or '(data flow)'}, {p.chunks} chunks, "
                   f"{p.comm_sms} SMs")
