"""The sweep's allocator settings (``energylens.sweep.allocator``): applied once, never over the user's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from energylens.sweep import allocator


@pytest.mark.parametrize("env", [{allocator.OPT_OUT: "0"}, {allocator.OPT_OUT: "off"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"MALLOC_TRIM_THRESHOLD_": "1"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}])
def test_left_alone_when_opted_out_or_tuned_by_the_user(env):
    assert allocator._apply(env) is False


def test_applied_once_per_process_on_glibc():
    if not (hasattr(os, "confstr") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")):
        pytest.skip("glibc only")
    code = ("import sys; from energylens.sweep import allocator as a\n"
            "first = a.keep_freed_memory({}); second = a.keep_freed_memory({a.OPT_OUT: '0'})\n"
            "print(first, second)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.split() == ["True", "True"]  # set on the first call; a later call keeps the process's state


def test_a_sweep_applies_it_in_its_process():
    code = ("from energylens.sweep import SweepSpec, run_sweep, allocator as a\n"
            "assert 'applied' not in a._state\n"
            "run_sweep(SweepSpec(models=('llama3-8b',), gpus=('h100-sxm',), tp=(1,), batch=(1,), prompt_len=(128,),"
            " output_len=(64,)))\n"
            "print(a._state['applied'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env[allocator.OPT_OUT] = "0"  # opted out: recorded as not applied
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.split() == ["False"]
