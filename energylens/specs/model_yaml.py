"""The einsum spec language: a ``Model`` read from (and written to) YAML or a plain Python mapping.

The user guide is ``docs/einsum-spec.md``; the field names here are the ones it documents. Loading
checks every field and names its YAML path in errors (``my.yaml: blocks[0].ops[3].einsum='...' is
not valid: ...``); nothing in a spec file is executed (``yaml.SafeLoader`` without aliases, sizes
written as numbers or as expressions of ``energylens.specs.expr``).

Tensor references in ``inputs``/``output`` are names, or mappings ``{name, dims, role, dtype,
shardable}``. What is not said is inferred, in this order: the op's inline mapping, the op's
``weight``/``roles``, the block's ``tensors`` table, the model's ``tensors`` table, then the einsum
string (its operand letters), the op that last wrote the name (walking pre, blocks, post in order),
and for an element-wise output the dims of its first input. A role not given is ``activation``.
``model_to_dict`` writes exactly what this inference cannot recover, so load(save(m)) == m.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from energylens.errors import EnergyLensError, SpecError
from energylens.graph.einsum import LEGEND, parse_einsum
from energylens.graph.model import MESH_AXES, OP_ATTRS, WORKLOAD_DIMS, Block, Model
from energylens.graph.ops import Op, Role, Tensor
from energylens.graph.precision import BITS, Precision, WeightFormat
from energylens.hardware.profile import DTYPE_BYTES
from energylens.hardware.profile import DTYPES as COMPUTE_DTYPES
from energylens.overlap.rules import OverlapPlan
from energylens.specs.expr import evaluate

MAX_SPEC_BYTES = 1 << 20  # a spec file is a few kB; refuse anything over 1 MiB
MAX_OPS = 5000  # per section
SPEC_SUFFIXES = (".yaml", ".yml")
TOP_FIELDS = ("name", "family", "hf_id", "legend", "config", "dims", "dtypes", "weight_formats", "sharding",
              "tensors", "pre",
              "blocks", "post", "overlap", "info")
BLOCK_FIELDS = ("name", "count", "input", "output", "tensors", "ops")
OP_FIELDS = ("name", "einsum", "flops_per_element", "gather_dim", "inputs", "output", "weight", "roles", "group",
             "causal", "whole_dims", "attrs")
TENSOR_FIELDS = ("name", "dims", "role", "dtype", "shardable")
DTYPE_FIELDS = {"weight": "weight_dtype", "activation": "act_dtype", "kv_cache": "kv_dtype"}
ROLES = tuple(r.value for r in Role)
MOE_LETTERS = ("e", "x", "c")


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors/aliases (no exponential 'billion laughs' expansion)."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError("YAML alias", f"*{event.anchor}", "spec files without anchors/aliases (write it out)")
        return super().compose_node(parent, index)


def _err(where: str, value: object, allowed: str) -> SpecError:
    return SpecError(where, value, allowed)


def _mapping(value: object, where: str, known: tuple[str, ...] | None = None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _err(where, value, "a mapping")
    out = dict(value)
    for key in out:
        if not isinstance(key, str):
            raise _err(f"{where}", key, "string keys")
        if known is not None and key not in known:
            raise _err(f"{where}.{key}", out[key], "a known field: " + ", ".join(known))
    return out


def _list(value: object, where: str, limit: int = MAX_OPS) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _err(where, value, "a list")
    if len(value) > limit:
        raise _err(where, f"{len(value)} entries", f"at most {limit}")
    return value


def _text(value: object, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise _err(where, value, "a non-empty string" if not empty else "a string")
    return value


def _letters(value: object, where: str, legend: Mapping[str, str]) -> str:
    text = "" if value is None else _text(value, where, empty=True).replace(" ", "")
    for c in text:
        if c not in legend:
            raise _err(where, value, "dimension letters of the legend: " + ", ".join(sorted(legend)))
    if len(set(text)) != len(text):
        raise _err(where, value, "each dimension letter once")
    return text


@dataclass
class _Walk:
    """Loader state: legend, tensor tables, and the dims of every name written so far."""

    origin: str
    legend: dict[str, str]
    sizes: dict[str, float]
    model_table: dict[str, dict]
    known: dict[str, str] = field(default_factory=dict)
    block_table: dict[str, dict] = field(default_factory=dict)

    def where(self, path: str) -> str:
        return f"{self.origin}: {path}" if self.origin else path

    def table_entry(self, name: str) -> dict:
        return {**self.model_table.get(name, {}), **self.block_table.get(name, {})}

    def tensor(self, ref: object, path: str, *, dims: str | None, role: str | None, fallback: str | None = None
               ) -> Tensor:
        """A Tensor from a reference; ``dims``/``role`` are what the op itself says (einsum operand, roles);
        ``fallback`` the dims of a name neither declared nor written before (an element-wise output)."""
        if isinstance(ref, str):
            inline: dict = {"name": ref}
        else:
            inline = _mapping(ref, self.where(path), TENSOR_FIELDS)
        name = _text(inline.get("name"), self.where(f"{path}.name"))
        entry = {**self.table_entry(name), **{k: v for k, v in inline.items() if k != "name"}}
        t_dims = entry.get("dims")
        if t_dims is not None:
            t_dims = _letters(t_dims, self.where(f"{path}.dims" if "dims" in inline else f"tensors.{name}.dims"),
                              self.legend)
            if dims is not None and t_dims != dims:
                raise _err(self.where(f"{path}.dims"), t_dims, f"{dims!r}, the operand's letters in the einsum")
        else:
            t_dims = dims if dims is not None else self.known.get(name, fallback)
        if t_dims is None:
            raise _err(self.where(path), name, "a tensor whose dims are known: written by an earlier op, an einsum "
                                               "operand, or declared in tensors (e.g. {dims: btd})")
        role_v = entry.get("role", role or "activation")
        if role_v not in ROLES:
            raise _err(self.where(f"{path}.role" if "role" in inline else f"tensors.{name}.role"), role_v,
                       "one of " + ", ".join(ROLES))
        dtype = entry.get("dtype")
        if dtype is not None and dtype not in DTYPE_BYTES:
            raise _err(self.where(f"{path}.dtype" if "dtype" in inline else f"tensors.{name}.dtype"), dtype,
                       "one of " + ", ".join(DTYPE_BYTES))
        shardable = entry.get("shardable", True)
        if not isinstance(shardable, bool):
            raise _err(self.where(f"tensors.{name}.shardable"), shardable, "true or false")
        return Tensor(name, t_dims, Role(role_v), dtype, shardable)

    def op(self, raw: object, path: str) -> Op:
        d = _mapping(raw, self.where(path), OP_FIELDS)
        name = _text(d.get("name"), self.where(f"{path}.name"))
        kinds = [k for k in ("einsum", "flops_per_element", "gather_dim") if k in d]
        if len(kinds) != 1:
            raise _err(self.where(path), name, "exactly one of einsum (a contraction), flops_per_element "
                                               "(an element-wise op) or gather_dim (a table lookup)")
        inputs = _list(d.get("inputs"), self.where(f"{path}.inputs"), 16)
        if not inputs or "output" not in d:
            raise _err(self.where(f"{path}.inputs"), d.get("inputs"), "a non-empty list of tensors, and an output")
        roles = self._roles(d, len(inputs), path)
        group = d.get("group")
        if group is not None:
            group = _text(group, self.where(f"{path}.group"))
        causal = d.get("causal", False)
        if not isinstance(causal, bool):
            raise _err(self.where(f"{path}.causal"), causal, "true or false")
        attrs = self._attrs(d.get("attrs"), f"{path}.attrs")
        if kinds[0] == "einsum":
            spec = parse_einsum(d["einsum"], self.legend, field=self.where(f"{path}.einsum"))
            if len(inputs) != len(spec.inputs):
                raise _err(self.where(f"{path}.inputs"), inputs, f"{len(spec.inputs)} tensors for {spec.text!r}")
            ins = tuple(self.tensor(r, f"{path}.inputs[{i}]", dims=dm, role=roles[i])
                        for i, (r, dm) in enumerate(zip(inputs, spec.inputs, strict=True)))
            out = self.tensor(d["output"], f"{path}.output", dims=spec.output, role=None)
            op = Op(name, "einsum", ins, out, spec=spec, group=group, causal=causal, attrs=attrs)
        else:
            ins = tuple(self.tensor(r, f"{path}.inputs[{i}]", dims=None, role=roles[i]) for i, r in enumerate(inputs))
            out = self.tensor(d["output"], f"{path}.output", dims=None, role=None, fallback=ins[0].dims)
            if kinds[0] == "flops_per_element":
                fpe = evaluate(d["flops_per_element"], self.sizes, self.where(f"{path}.flops_per_element"),
                               integer=False, positive=False)
                if fpe < 0:
                    raise _err(self.where(f"{path}.flops_per_element"), d["flops_per_element"], "a number >= 0")
                whole = _letters(d.get("whole_dims"), self.where(f"{path}.whole_dims"), self.legend)
                op = Op(name, "elementwise", ins, out, flops_per_element=float(fpe), whole_dims=whole, group=group,
                        causal=causal, attrs=attrs)
            else:
                gd = _letters(d["gather_dim"], self.where(f"{path}.gather_dim"), self.legend)
                if len(gd) != 1 or len(ins) != 2 or gd not in ins[1].dims:
                    raise _err(self.where(f"{path}.gather_dim"), d["gather_dim"],
                               "one letter of the table (the second of two inputs: ids, table)")
                op = Op(name, "gather", ins, out, gather_dim=gd, group=group, causal=causal, attrs=attrs)
        for t in (*op.inputs, op.output):
            self.known[t.name] = t.dims
        return op

    def _roles(self, d: dict, n: int, path: str) -> list[str | None]:
        roles: list[str | None] = [None] * n
        if "roles" in d:
            given = _list(d["roles"], self.where(f"{path}.roles"), n)
            if len(given) != n or any(r not in ROLES for r in given):
                raise _err(self.where(f"{path}.roles"), d["roles"], f"{n} roles, each one of " + ", ".join(ROLES))
            roles = list(given)
        if "weight" in d:
            w = d["weight"]
            if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < n:
                raise _err(self.where(f"{path}.weight"), w, f"the index (0..{n - 1}) of the input that is a weight")
            roles[w] = "weight"
        return roles

    def _attrs(self, raw: object, path: str) -> dict:
        attrs = _mapping(raw, self.where(path), tuple(OP_ATTRS))
        allowed = {"tokens": ("last",), "route": ("dispatch", "combine"), "moe": ("expert", "shared")}
        for key, value in attrs.items():
            if key in allowed and value not in allowed[key]:
                raise _err(self.where(f"{path}.{key}"), value, OP_ATTRS[key])
            if key == "causal" and not isinstance(value, bool):
                raise _err(self.where(f"{path}.{key}"), value, OP_ATTRS[key])
            if key == "window":
                attrs[key] = evaluate(value, self.sizes, self.where(f"{path}.window"))
        return attrs


def _read_text(path: Path) -> str:
    from energylens.checks import is_file, read_text

    if not is_file(path):
        raise SpecError("model spec file", str(path), "an existing .yaml file")
    return read_text(path, "model spec file", max_bytes=MAX_SPEC_BYTES, what="an einsum spec .yaml file")


def parse_yaml(text: str, origin: str = "") -> object:
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise SpecError(origin or "model spec", f"{len(text)} characters", f"at most {MAX_SPEC_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"{origin or 'model spec'}{at}", getattr(exc, "problem", str(exc)), "valid YAML") from None
    except EnergyLensError:
        raise  # our own refusal (an alias) already names the field
    except (RecursionError, ValueError, OverflowError, TypeError) as exc:  # nesting bombs, bad timestamps
        raise SpecError(origin or "model spec", exc.__class__.__name__, "YAML a parser can read") from None


def load_model_spec(source: str | Path | Mapping) -> Model:
    """A ``Model`` from a spec file path, YAML text or an already parsed mapping."""
    if isinstance(source, Mapping):
        return model_from_dict(source)
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and source.lower().endswith(SPEC_SUFFIXES)):
        path = Path(source)
        return model_from_dict(parse_yaml(_read_text(path), str(path)), str(path))
    return model_from_dict(parse_yaml(str(source)), "")


def model_from_dict(data: object, origin: str = "") -> Model:
    """Build and check a ``Model`` from the spec mapping (the same field names as the YAML file)."""
    top = _mapping(data, origin or "model spec")
    w = lambda p: f"{origin}: {p}" if origin else p  # noqa: E731
    for key in top:
        if key not in TOP_FIELDS:
            raise _err(w(key), top[key], "a known field: " + ", ".join(TOP_FIELDS))
    name = _text(top.get("name"), w("name"))
    legend = dict(LEGEND)
    for letter, meaning in _mapping(top.get("legend"), w("legend")).items():
        if len(letter) != 1 or not letter.islower() or letter in WORKLOAD_DIMS:
            raise _err(w(f"legend.{letter}"), letter, "a single lowercase letter other than b, t, s")
        legend[letter] = _text(meaning, w(f"legend.{letter}"))
    names: dict[str, float] = {}
    for key, value in _mapping(top.get("config"), w("config")).items():
        names[key] = evaluate(value, names, w(f"config.{key}"), integer=False, positive=False)
    dims: dict[str, int] = {}
    for letter, value in _mapping(top.get("dims"), w("dims")).items():
        if letter not in legend or letter in WORKLOAD_DIMS:
            raise _err(w(f"dims.{letter}"), value, "a letter of the legend other than b, t, s (bound by the "
                                                  "workload); declare new letters under legend")
        dims[letter] = evaluate(value, {**names, **dims}, w(f"dims.{letter}"))
    walk = _Walk(origin, legend, {**names, **dims}, _tables(top.get("tensors"), w("tensors"), legend))
    pre = tuple(walk.op(o, f"pre[{i}]") for i, o in enumerate(_list(top.get("pre"), w("pre"))))
    blocks = []
    for i, raw in enumerate(_list(top.get("blocks"), w("blocks"), 1000)):
        b = _mapping(raw, w(f"blocks[{i}]"), BLOCK_FIELDS)
        walk.block_table = _tables(b.get("tensors"), w(f"blocks[{i}].tensors"), legend)
        ops = tuple(walk.op(o, f"blocks[{i}].ops[{j}]") for j, o in enumerate(_list(b.get("ops"), w(f"blocks[{i}].ops"))))
        if not ops:
            raise _err(w(f"blocks[{i}].ops"), b.get("ops"), "a non-empty list of ops")
        count = evaluate(b.get("count", 1), walk.sizes, w(f"blocks[{i}].count"))
        blocks.append(Block(_text(b.get("name", f"block{i}"), w(f"blocks[{i}].name")), ops, count,
                            _text(b.get("input", "x"), w(f"blocks[{i}].input")),
                            _text(b.get("output", "x_next"), w(f"blocks[{i}].output"))))
        walk.block_table = {}
    if not blocks:
        raise _err(w("blocks"), top.get("blocks"), "at least one block of ops")
    post = tuple(walk.op(o, f"post[{i}]") for i, o in enumerate(_list(top.get("post"), w("post"))))
    used = {c for op in (*pre, *(o for b in blocks for o in b.ops), *post) for c in op.dims}
    if "c" in used and "c" not in dims:
        dims["c"] = 1  # tokens per expert: bound from the routing at evaluation time
    for letter in sorted(used - set(dims) - set(WORKLOAD_DIMS)):
        raise _err(w("dims"), letter, f"a size for every letter the ops use ({letter} has none)")
    dtypes = _mapping(top.get("dtypes"), w("dtypes"), tuple(DTYPE_FIELDS))
    for key, value in dtypes.items():
        allowed = DTYPE_BYTES if key == "kv_cache" else COMPUTE_DTYPES  # weights/activations set the GEMM dtype
        if value not in allowed:
            raise _err(w(f"dtypes.{key}"), value, "one of " + ", ".join(allowed)
                       + ("" if key == "kv_cache" else " (other storage dtypes: per tensor, tensors.NAME.dtype)"))
    sharding: dict[str, str | None] = {}
    for letter, axis in _mapping(top.get("sharding"), w("sharding")).items():
        if letter not in dims:
            raise _err(w(f"sharding.{letter}"), axis, "a dimension of dims: " + ", ".join(sorted(dims)))
        if axis in (None, "none"):
            axis = None
        elif axis not in MESH_AXES:
            raise _err(w(f"sharding.{letter}"), axis, "one of " + ", ".join(MESH_AXES) + " or none (replicated)")
        sharding[letter] = axis
    overlap = []
    for i, raw in enumerate(_list(top.get("overlap"), w("overlap"), 100)):
        o = _mapping(raw, w(f"overlap[{i}]"), ("collective", "compute", "chunks", "comm_sms"))
        try:
            overlap.append(OverlapPlan(**o))
        except EnergyLensError as exc:
            raise _err(w(f"overlap[{i}].{exc.field.removeprefix('overlap.')}"), exc.value, exc.allowed) from None
    info = _tuples(_mapping(top.get("info"), w("info")))
    if any((op.attrs or {}).get("route") == "dispatch" for b in blocks for op in b.ops) and "moe" not in info:
        info["moe"] = _moe_info(blocks, dims, dtypes.get("weight", "bf16"), w)
    kw = {DTYPE_FIELDS[k]: v for k, v in dtypes.items()}
    formats = _weight_formats(top.get("weight_formats"), w)
    try:
        model = Model(name=name, dims=dims, pre=pre, blocks=tuple(blocks), post=post, legend=legend,
                      hf_id=str(top.get("hf_id") or ""), family=str(top.get("family") or ""), info=info,
                      sharding=sharding, overlap=tuple(overlap), **kw)
    except EnergyLensError as exc:
        raise type(exc)(w(exc.field), exc.value, exc.allowed) from None
    if not formats:
        return model
    unknown = sorted(set(formats) - set(model.weight_names()))
    if unknown:
        raise _err(w("weight_formats"), unknown[0], "the name of a weight tensor of the model")
    p = model.precision
    return model.with_precision(Precision(p.default, p.activation, p.kv_cache, {**p.weights, **formats},
                                          "spec file weight_formats"))


FORMAT_FIELDS = ("name", "storage", "bytes_per_element", "activation", "scheme", "method")


def _weight_formats(raw, w) -> dict[str, WeightFormat]:
    """``weight_formats: {tensor: {name, storage, bytes_per_element, activation, scheme, method}}``: stored
    format of quantised weights (``energylens.graph.precision``; scales included in bytes_per_element)."""
    out: dict[str, WeightFormat] = {}
    for tensor, entry in _mapping(raw, w("weight_formats")).items():
        e = _mapping(entry, w(f"weight_formats.{tensor}"), FORMAT_FIELDS)
        storage, act = e.get("storage"), e.get("activation")
        if storage not in BITS:
            raise _err(w(f"weight_formats.{tensor}.storage"), storage, "one of " + ", ".join(BITS))
        if act not in (None, "fp8", "fp4", "int8"):
            raise _err(w(f"weight_formats.{tensor}.activation"), act, "fp8, fp4, int8 or null (weight-only)")
        size = e.get("bytes_per_element")
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size <= 8:
            raise _err(w(f"weight_formats.{tensor}.bytes_per_element"), size, "a number of bytes in (0, 8]")
        out[str(tensor)] = WeightFormat(str(e.get("name") or storage), storage, float(size), act,
                                        str(e.get("scheme") or ""), str(e.get("method") or ""))
    return out


def _tables(raw: object, where: str, legend: Mapping[str, str]) -> dict[str, dict]:
    out = {}
    for name, entry in _mapping(raw, where).items():
        e = _mapping(entry, f"{where}.{name}", TENSOR_FIELDS[1:])
        out[name] = e
    return out


def _tuples(value: object) -> object:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _moe_info(blocks: list[Block], dims: dict[str, int], weight_dtype: str, w) -> dict:
    for letter in MOE_LETTERS:
        if letter not in dims:
            raise _err(w("dims"), sorted(dims), "e (experts) and x (experts per token) for a model with a "
                                               "dispatch op")
    expert_dtype = next((t.dtype for b in blocks for op in b.ops for t in op.weights if "e" in t.dims and t.dtype),
                        weight_dtype)
    moe_layers = sum(b.count for b in blocks if any((op.attrs or {}).get("route") == "dispatch" for op in b.ops))
    shared = any((op.attrs or {}).get("moe") == "shared" for b in blocks for op in b.ops)
    return {"n_experts": dims["e"], "top_k": dims["x"], "moe_layers": moe_layers, "shared_experts": int(shared),
            "expert_dtype": expert_dtype}


# ----------------------------------------------------------------------------------------------
# Saving: the shipped builders' models written in the same language
# ----------------------------------------------------------------------------------------------


def _hints(op: Op) -> tuple[list[str | None], str | None, str | None]:
    """(input dims, output dims, output fallback) the loader takes from the op itself."""
    if op.kind == "einsum" and op.spec is not None:
        return list(op.spec.inputs), op.spec.output, None
    return [None] * len(op.inputs), None, op.inputs[0].dims


def _declaration(t: Tensor, with_dims: bool) -> dict:
    out: dict = {"dims": t.dims} if with_dims else {}
    if t.role is not Role.ACTIVATION:
        out["role"] = t.role.value
    if t.dtype is not None:
        out["dtype"] = t.dtype
    if not t.shardable:
        out["shardable"] = False
    return out


def _declarations(model: Model) -> tuple[dict[str, dict], set[tuple[int, int]]]:
    """Model-level tensor table and the (op index, position) pairs that need an inline mapping.

    Replays the loader's inference over the plain names: a tensor it would not recover exactly is
    declared once in the table when every use of its name is the same tensor, inline otherwise."""
    walk = _Walk("", dict(model.legend), {}, {})
    uses: dict[str, list[tuple[int, int, Tensor, Tensor | None]]] = {}
    for i, op in enumerate(model.all_ops()):
        dims_in, dims_out, fallback = _hints(op)
        tensors = [*zip(op.inputs, dims_in, [None] * len(op.inputs), strict=True), (op.output, dims_out, fallback)]
        for pos, (t, hint, fb) in enumerate(tensors):
            try:
                got: Tensor | None = walk.tensor(t.name, "", dims=hint, role=None, fallback=fb)
            except SpecError:
                got = None
            uses.setdefault(t.name, []).append((i, pos, t, got))
        for t in (*op.inputs, op.output):
            walk.known[t.name] = t.dims
    table: dict[str, dict] = {}
    inline: set[tuple[int, int]] = set()
    for name, entries in uses.items():
        needs = [(i, pos, t, got) for i, pos, t, got in entries if got != t]
        if not needs:
            continue
        if len({t for _, _, t, _ in entries}) == 1:
            with_dims = any(got is None or got.dims != t.dims for _, _, t, got in needs)
            table[name] = _declaration(entries[0][2], with_dims)
        else:
            inline.update((i, pos) for i, pos, _, _ in needs)
    return table, inline


def _op_dict(op: Op, index: int, inline: set[tuple[int, int]]) -> dict:
    def ref(t: Tensor, pos: int) -> object:
        return {"name": t.name, **_declaration(t, True)} if (index, pos) in inline else t.name

    d: dict = {"name": op.name}
    if op.kind == "einsum":
        d["einsum"] = op.spec.text
    elif op.kind == "gather":
        d["gather_dim"] = op.gather_dim
    else:
        fpe = op.flops_per_element
        d["flops_per_element"] = int(fpe) if float(fpe).is_integer() else fpe
    d["inputs"] = [ref(t, p) for p, t in enumerate(op.inputs)]
    d["output"] = ref(op.output, len(op.inputs))
    if op.kind == "elementwise" and op.whole_dims:
        d["whole_dims"] = op.whole_dims
    if op.group is not None:
        d["group"] = op.group
    if op.causal:
        d["causal"] = True
    if op.attrs:
        d["attrs"] = dict(op.attrs)
    return d


def _plain(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def model_to_dict(model: Model) -> dict:
    """The spec mapping of a ``Model`` (what ``save_model_spec`` writes); ``model_from_dict`` reads it back."""
    table, inline = _declarations(model)
    index = iter(range(len(model.all_ops())))
    out: dict = {"name": model.name}
    if model.family:
        out["family"] = model.family
    if model.hf_id:
        out["hf_id"] = model.hf_id
    legend = {k: v for k, v in model.legend.items() if LEGEND.get(k) != v}
    if legend:
        out["legend"] = legend
    out["dims"] = {k: int(v) for k, v in model.dims.items()}
    quantised = {n: model.weight_format(n) for n in model.weight_names() if model.weight_format(n).quantised}
    weight = model.precision.default.name if quantised else model.weight_dtype
    out["dtypes"] = {"weight": weight, "activation": model.act_dtype, "kv_cache": model.kv_dtype}
    if quantised:
        out["weight_formats"] = {n: {k: getattr(f, k) for k in FORMAT_FIELDS} for n, f in quantised.items()}
    if model.sharding:
        out["sharding"] = {k: (v if v is not None else "none") for k, v in model.sharding.items()}
    if table:
        out["tensors"] = table
    out["pre"] = [_op_dict(op, next(index), inline) for op in model.pre]
    out["blocks"] = []
    for b in model.blocks:
        entry: dict = {"name": b.name, "count": b.count}
        if b.input != "x":
            entry["input"] = b.input
        if b.output != "x_next":
            entry["output"] = b.output
        entry["ops"] = [_op_dict(op, next(index), inline) for op in b.ops]
        out["blocks"].append(entry)
    out["post"] = [_op_dict(op, next(index), inline) for op in model.post]
    if model.overlap:
        out["overlap"] = [p.to_dict() for p in model.overlap]
    if model.info:
        out["info"] = _plain(model.info)
    return out


def save_model_spec(model: Model, path: str | Path | None = None) -> str:
    """The model as spec YAML text; written to ``path`` when given."""
    text = yaml.safe_dump(model_to_dict(model), sort_keys=False, default_flow_style=None, width=110,
                          allow_unicode=True)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
