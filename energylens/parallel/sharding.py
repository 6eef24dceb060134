"""The rules that derive collectives from sharding. Collectives are never hand-written.

Walking the ops of a block in order, each tensor carries a state: which of its dimensions are
sharded over which mesh axis, and over which axes it is a pending partial sum.

* Weights and KV cache are sharded as the layout maps their dimensions.
* Einsum: the persistent inputs (weights, KV cache) claim their axes first. An activation sharded
  on a dimension over an axis that the op already uses for another dimension must be made whole
  first -> **all-gather**. Contracting over a sharded dimension leaves a partial sum ->
  **all-reduce** of the output (under sequence parallelism: **reduce-scatter** along ``t``).
* Element-wise: a dimension the op reduces over (``whole_dims``: norm over ``d``, softmax over
  ``s``, sampling over ``v``) must be whole -> **all-gather**; inputs sharded inconsistently are
  gathered; a whole input next to a sharded one is sliced locally (free).
* Gather (embedding): a sharded table dimension that is looked up leaves a partial sum ->
  **all-reduce** (vocabulary-parallel embedding).
* Routing (``attrs['route']``, mixture of experts): ``dispatch`` sends tokens to the ranks that hold
  their experts and ``combine`` brings the results back -> **all-to-all** over the expert axis (none
  when ``ep == 1``). Under expert parallelism an expert weight (a weight over ``e``) is whole on its
  rank (sharded over ``e`` only, never over ``tp``); with ``ep == 1`` experts are tensor-parallel on
  ``f`` and the dispatch first gathers tokens split over ``t``. Partial sums of expert and shared-
  expert outputs (ops with ``attrs['moe']``) pass through the linear combine and are reduced once on
  its ``btd`` output (all-reduce, or reduce-scatter under SP), as vLLM does. When the expert groups
  lie inside one replica's tensor-parallel group (``ep`` divides ``tp``) and the tokens are
  replicated over it (no sequence parallelism), every rank already holds every token: the dispatch
  is local (each rank picks the tokens routed to its own experts, no collective) and the expert
  outputs are partial sums over the ``tp`` group, reduced with the shared experts' by ONE
  all-reduce on the combine's output: the collectives of ``ep == 1`` (vLLM with
  ``--enable-expert-parallel`` and data-parallel size 1; its all-to-all kernels run only when the
  tokens differ across the expert group). Otherwise (``ep`` spans data-parallel replicas, or
  sequence parallelism splits the tokens over ``tp``) each token is dispatched by one tp rank and
  returns to it: the combine output is split over ``t`` (reduce-scatter of pending partial sums)
  and all-gathered over ``tp`` unless sequence parallelism keeps it split.
* Pipeline stage boundaries -> **send/recv** of the residual stream (added by the program builder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from energylens.graph.ops import Op, Role, Tensor

Shard = frozenset  # of (dim, axis) pairs


@dataclass(frozen=True)
class TensorState:
    shard: frozenset = frozenset()
    partial: frozenset = frozenset()

    @property
    def dims(self) -> frozenset:
        return frozenset(d for d, _ in self.shard)


REPLICATED = TensorState()


@dataclass(frozen=True)
class OpStep:
    op: Op
    shard: Mapping[str, str]  # iteration-space dim -> axis, for this op on one rank
    tensor_shards: Mapping[str, frozenset]  # tensor name -> its sharded dims (for per-rank bytes)


@dataclass(frozen=True)
class CollectiveStep:
    kind: str  # all_reduce | all_gather | reduce_scatter | all_to_all | send_recv
    axis: str
    tensor: Tensor
    shard: frozenset  # sharded dims of the tensor as the collective's message sees it (nccl-tests size)
    dim: str = ""  # gathered / scattered dimension, if any
    reason: str = ""
    name: str = ""
    attrs: Mapping[str, object] = field(default_factory=dict)  # the op's size attributes (e.g. last token)


Step = OpStep | CollectiveStep


@dataclass
class Deriver:
    """Derives the per-rank steps of an op sequence under a dim->axis map."""

    axes: Mapping[str, str]  # dim -> axis, only axes whose degree can exceed 1
    sp: bool = False
    state: dict[str, TensorState] = field(default_factory=dict)
    local_experts: bool = False  # expert groups inside the tp group, tokens replicated: no all-to-all

    def persistent(self, t: Tensor) -> TensorState:
        if not t.shardable:
            return REPLICATED
        if "e" in t.dims and "e" in self.axes:  # MoE: under expert parallelism each expert is whole on its rank
            return TensorState(frozenset({("e", self.axes["e"])}))
        return TensorState(frozenset((d, self.axes[d]) for d in t.dims if d in self.axes))

    def get(self, t: Tensor) -> TensorState:
        if t.role in (Role.WEIGHT,) or (t.role is Role.KV_CACHE and t.name not in self.state):
            return self.persistent(t)
        return self.state.get(t.name, REPLICATED)

    def _reduce(self, op: Op, t: Tensor, st: TensorState, steps: list) -> TensorState:
        for axis in sorted(st.partial):
            steps.append(CollectiveStep("all_reduce", axis, t, st.dims, reason=f"partial sum of {t.name} over {axis}",
                                        name=f"{op.name}:all_reduce", attrs=dict(op.attrs or {})))
        st = TensorState(st.shard)
        self.state[t.name] = st
        return st

    def _gather(self, op: Op, t: Tensor, st: TensorState, dim: str, axis: str, steps: list, why: str) -> TensorState:
        after = TensorState(frozenset(p for p in st.shard if p != (dim, axis)), st.partial)
        steps.append(CollectiveStep("all_gather", axis, t, after.dims, dim=dim, reason=why,
                                    name=f"{op.name}:all_gather", attrs=dict(op.attrs or {})))
        if t.role is Role.ACTIVATION:
            self.state[t.name] = after
        return after

    def derive(self, ops: tuple[Op, ...]) -> list[Step]:
        steps: list[Step] = []
        for op in ops:
            route = op.attrs.get("route") if op.attrs else None
            if route:
                self._route(op, str(route), steps)
            elif op.kind == "einsum":
                self._einsum(op, steps)
            elif op.kind == "gather":
                self._gather_op(op, steps)
            else:
                self._elementwise(op, steps)
        return steps

    def _einsum(self, op: Op, steps: list) -> None:
        claims: dict[str, set[str]] = {}
        states: dict[str, TensorState] = {}
        for t in op.inputs:
            if t.role is not Role.ACTIVATION:
                st = self.get(t)
                states[t.name] = st
                for d, a in st.shard:
                    claims.setdefault(a, set()).add(d)
        for t in op.inputs:
            if t.role is not Role.ACTIVATION:
                continue
            st = self.get(t)
            if st.partial:
                st = self._reduce(op, t, st, steps)
            for d, a in sorted(st.shard):
                # dims the layout maps to the same axis are split jointly (query heads g x r over tp)
                joint = self.axes.get(d) == a
                if a in claims and d not in claims[a] and not joint:
                    st = self._gather(op, t, st, d, a, steps,
                                      f"{op.name} shards {','.join(sorted(claims[a]))} over {a}; {t.name} needs {d} whole")
                else:
                    claims.setdefault(a, set()).add(d)
            states[t.name] = st
        op_shard = {d: a for a, ds in claims.items() for d in ds}
        out = op.output
        out_shard = frozenset((d, a) for d, a in op_shard.items() if d in out.dims)
        contracted = op.spec.contracted if op.spec else ""
        partial = frozenset(a for d, a in op_shard.items() if d in contracted)
        shards = {name: st.dims for name, st in states.items()}
        shards[out.name] = frozenset(d for d, _ in out_shard)
        steps.append(OpStep(op, op_shard, shards))
        self._finish(op, out, TensorState(out_shard, partial), steps)

    def _finish(self, op: Op, out: Tensor, st: TensorState, steps: list) -> None:
        """Resolve a partial-sum output right away: all-reduce, or reduce-scatter along t under SP."""
        if st.partial and (op.attrs or {}).get("moe") in ("expert", "shared"):
            self.state[out.name] = st  # MoE: the combine is linear; its output is reduced once (see _route)
            return
        for axis in sorted(st.partial):
            if self.sp and axis == "tp" and "t" in out.dims and "t" not in st.dims:
                steps.append(CollectiveStep("reduce_scatter", axis, out, st.dims, dim="t",
                                            reason=f"partial sum of {out.name} over {axis} (sequence parallel)",
                                            name=f"{op.name}:reduce_scatter", attrs=dict(op.attrs or {})))
                st = TensorState(st.shard | {("t", axis)}, st.partial - {axis})
            else:
                steps.append(CollectiveStep("all_reduce", axis, out, st.dims,
                                            reason=f"{op.name} contracts a dimension sharded over {axis}",
                                            name=f"{op.name}:all_reduce", attrs=dict(op.attrs or {})))
                st = TensorState(st.shard, st.partial - {axis})
        self.state[out.name] = st

    def _elementwise(self, op: Op, steps: list) -> None:
        states: dict[str, TensorState] = {}
        axis_dims: dict[str, frozenset] = {}  # axis -> the output dims it shards (jointly, e.g. g and r)
        dim_axis: dict[str, str] = {}
        for t in op.inputs:
            st = self.get(t)
            if t.role is Role.ACTIVATION or t.role is Role.KV_CACHE:
                if st.partial:
                    st = self._reduce(op, t, st, steps)
                for d, a in sorted(st.shard):
                    if d in op.whole_dims:
                        st = self._gather(op, t, st, d, a, steps, f"{op.name} reduces over {d}")
                mine: dict[str, set] = {}
                for d, a in st.shard:
                    if d in op.output.dims:
                        mine.setdefault(a, set()).add(d)
                for a, ds in sorted(mine.items()):
                    ds_f = frozenset(ds)
                    clash = (a in axis_dims and axis_dims[a] != ds_f) or any(
                        dim_axis.get(d, a) != a for d in ds_f)
                    if clash:
                        for d in sorted(ds_f):
                            st = self._gather(op, t, st, d, a, steps,
                                              f"{t.name} sharded unlike the other inputs of {op.name}")
                    else:
                        axis_dims[a] = ds_f
                        for d in ds_f:
                            dim_axis[d] = a
            states[t.name] = st
        shard_map = dict(dim_axis)
        for t in op.inputs:  # weights follow the output's sharding (e.g. a norm weight over a sharded dim)
            if t.role is Role.WEIGHT:
                states[t.name] = TensorState(frozenset((d, a) for d, a in shard_map.items() if d in t.dims))
        shards = {name: st.dims for name, st in states.items()}
        shards[op.output.name] = frozenset(shard_map)
        steps.append(OpStep(op, shard_map, shards))
        self.state[op.output.name] = TensorState(frozenset(shard_map.items()))

    def _gather_op(self, op: Op, steps: list) -> None:
        ids, table = op.inputs
        tst = self.get(table)
        ist = self.get(ids)
        op_shard = {d: a for d, a in tst.shard}
        for d, a in ist.shard:
            op_shard.setdefault(d, a)
        out_shard = frozenset((d, a) for d, a in op_shard.items() if d in op.output.dims)
        partial = frozenset(a for d, a in op_shard.items() if d == op.gather_dim)
        shards = {ids.name: ist.dims, table.name: tst.dims, op.output.name: frozenset(d for d, _ in out_shard)}
        steps.append(OpStep(op, op_shard, shards))
        self._finish(op, op.output, TensorState(out_shard, partial), steps)

    def _route(self, op: Op, route: str, steps: list) -> None:
        """Token dispatch to experts and combine back: all-to-all over the expert axis, or local (see
        ``local_experts``) with the expert outputs left as partial sums over ``tp``."""
        axis = self.axes.get("e")
        local = bool(axis and self.local_experts and not self.sp and "tp" in self.axes.values())
        if route == "dispatch":
            if not axis:  # experts replicated or tensor-parallel: every rank's experts need every token
                for t in op.inputs:
                    st = self.get(t)
                    for d, a in sorted(st.shard):
                        if d == "t" and t.role is Role.ACTIVATION:
                            st = self._gather(op, t, st, d, a, steps, f"{op.name}: the experts on every rank "
                                              "see all tokens")
            self._elementwise(op, steps)
            if axis:
                out = op.output
                st = self.state[out.name]
                st = TensorState(st.shard | {("e", axis)}, st.partial)
                self.state[out.name] = st
                last = steps[-1]
                assert isinstance(last, OpStep)
                steps[-1] = OpStep(op, {**last.shard, "e": axis}, {**last.tensor_shards, out.name: st.dims})
                if local:  # every rank holds every token: it picks those routed to its own experts
                    return
                steps.append(CollectiveStep("all_to_all", axis, out, st.dims, dim="e",
                                            reason="tokens sent to the ranks holding their experts",
                                            name=f"{op.name}:all_to_all"))
        elif route == "combine":
            # Partial sums of the expert outputs (tensor-parallel experts, ep == 1) and of the shared
            # experts pass through the linear combine and are reduced once, on its btd output.
            partial: frozenset = frozenset()
            for t in op.inputs:
                st = self.get(t)
                if t.role is Role.ACTIVATION and st.partial:
                    partial = partial | st.partial
                    self.state[t.name] = TensorState(st.shard)
            src = op.inputs[0]
            st = self.get(src)
            if local:
                # the tp group holds every token and each expert once (ep divides tp): a rank's combine
                # sums its own experts' outputs, a partial sum over tp, reduced with the shared experts'
                self._elementwise(op, steps)
                out = op.output
                self._finish(op, out, TensorState(self.state[out.name].shard, partial | {"tp"}), steps)
                return
            if axis and any(a == axis for _, a in st.shard):
                steps.append(CollectiveStep("all_to_all", axis, src, st.dims, dim="e",
                                            reason="expert outputs returned to their tokens' ranks",
                                            name=f"{op.name}:all_to_all"))
                # the returned buffer keeps its expert-axis split for sizing: a rank gets back the
                # outputs of its own tokens, T*k/ep rows, not the whole e x c buffer
            self._elementwise(op, steps)
            out = op.output
            out_st = self.state[out.name]
            tp_axis = "tp" if "tp" in self.axes.values() else ""
            if axis and tp_axis and "t" in out.dims:
                # Expert parallelism with tensor-parallel attention: each token was dispatched by one of
                # the tp ranks holding it and comes back to that rank only, so the output is split over
                # t; pending partial sums are reduce-scattered to that split, then (without sequence
                # parallelism) the tp ranks all-gather the tokens back.
                split = TensorState(out_st.shard | {("t", tp_axis)})
                for a in sorted(partial):
                    steps.append(CollectiveStep("reduce_scatter", a, out, out_st.dims - {"t"}, dim="t",
                                                reason=f"partial sums of the shared experts over {a}",
                                                name=f"{op.name}:reduce_scatter"))
                if not self.sp and ("t", tp_axis) not in out_st.shard:
                    steps.append(CollectiveStep("all_gather", tp_axis, out, out_st.dims, dim="t",
                                                reason="expert outputs came back split over the tp ranks",
                                                name=f"{op.name}:all_gather"))
                    split = TensorState(out_st.shard)
                self.state[out.name] = split
            else:
                self._finish(op, out, TensorState(out_st.shard, partial), steps)
        else:
            raise ValueError(f"unknown route {route!r}")


def derive_block(ops: tuple[Op, ...], axes: Mapping[str, str], *, sp: bool, input_name: str, output_name: str,
                 input_state: TensorState = REPLICATED, local_experts: bool = False) -> tuple[list[Step], TensorState]:
    """Steps of one repeated block in its steady state (the input sharded as the previous block's output).
    A block may also read the previous block's ``output_name`` (vLLM's residual add at the start of a
    layer): it enters in the same state as the input."""
    d = Deriver(dict(axes), sp, {input_name: input_state, output_name: input_state}, local_experts)
    steps = d.derive(ops)
    out_state = d.state.get(output_name, REPLICATED)
    if out_state != input_state:
        d = Deriver(dict(axes), sp, {input_name: out_state, output_name: out_state}, local_experts)
        steps = d.derive(ops)
        out_state = d.state.get(output_name, REPLICATED)
    return steps, out_state
