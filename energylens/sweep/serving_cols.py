"""``serve_*`` sweep columns: the continuous-batching steady state of :mod:`energylens.serving`, vectorised
over the whole grid block at once (layouts included).

The block's layout axes (tp, pp, dp, ep, placeholders where invalid) broadcast along their own grid
dimensions, exactly as the static evaluation sees them, and the running batch per replica is the
block's ``U`` axis (``batch / dp``; ``dp`` stays a layout axis, so kernels that do not depend on it are
costed once for every ``dp``). One :func:`energylens.serving.serve_arrays` call (``per_replica=True``)
then costs every configuration of the block through the same formula functions as ``energylens serve``
(``serving_parts``, ``iteration_cost``, ``combine``, ``cost.clock_hold`` under a power limit): no
loop over layouts or configurations. A row equals ``serve_arrays`` on its own scalar layout (to
floating-point rounding; ``tests/sweep/test_serving_columns.py``).

Columns (per configuration, at a concurrency of ``batch`` running requests; 0 where
``output_len`` is 0): ``serve_energy_per_output_token_j``, ``serve_itl_s`` (median inter-token
latency), ``serve_output_tokens_per_s`` (all GPUs), ``serve_avg_power_w`` (all GPUs). With a
:class:`energylens.carbon.Footprint` that asks for them also ``serve_gco2e_per_output_token``,
``serve_gco2e_per_million_tokens``, ``serve_usd_per_output_token`` and ``serve_usd_per_million_tokens``
(facility energy = J x PUE; price per GPU-hour over tokens per GPU-hour).
"""

from __future__ import annotations

import numpy as np

SERVE_FIELDS = {"energy_per_output_token_j": "serve_energy_per_output_token_j",
                "decode_step_latency_s": "serve_itl_s",
                "output_tokens_per_s": "serve_output_tokens_per_s",
                "avg_power_w": "serve_avg_power_w"}
FOOTPRINT_FIELDS = ("gco2e_per_output_token", "gco2e_per_million_tokens", "usd_per_output_token",
                    "usd_per_million_tokens")


def serving_columns(m, g, lay, batch_per_replica, prompt_len, output_len, take, footprint=None) -> dict:
    """The ``serve_*`` columns of the rows ``take`` gathers from the evaluation grid, as lazy columns
    (``sweep.table.Source``: the serving state is evaluated here, the rows gathered when read).

    ``lay``: the block's layout of arrays; ``batch_per_replica``, ``prompt_len``, ``output_len``: the
    grid's workload axes (float arrays broadcasting with ``lay``); ``take``: the runner's gather of valid
    rows (``sweep.rows.RowGather``); the rows' ``output_len`` and ``num_gpus`` are read from the table."""
    from energylens.serving import serve_arrays

    res = serve_arrays(m, g, lay, batch_per_replica, prompt_len, np.maximum(output_len, 1.0), per_replica=True)

    def gathered(name: str):
        src = take.source(getattr(res, name))
        return lambda rows, get: np.where(get("output_len") > 0, src(rows, get), 0.0)

    cols = {col: gathered(name) for name, col in SERVE_FIELDS.items()}
    if footprint is not None and footprint.asked:
        probe = footprint.per_token(np.ones(1), np.ones(1))

        def per_token(name: str):
            def source(rows, get):
                per_gpu = get("serve_output_tokens_per_s") / np.asarray(get("num_gpus"), dtype=float)
                fp = footprint.per_token(get("serve_energy_per_output_token_j"), per_gpu)
                return np.where(get("output_len") > 0, fp[name], 0.0)
            return source

        cols.update({f"serve_{name}": per_token(name) for name in FOOTPRINT_FIELDS if probe[name] is not None})
    return cols
