"""The built-in GPU catalogue and links.yaml: every number loads, is sourced and is in SI units."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from energylens.errors import SpecError, UnknownNameError
from energylens.hardware import known_gpus, load_gpu
from energylens.hardware.links import LINK_FIELDS, get_link, load_links, parse_links
from energylens.hardware.profile import DTYPES, FIELDS, KERNEL_FAMILY_FIELDS, KINDS, _expected_unit

GPU_KEYS = ["a100-sxm-40gb", "a100-sxm-80gb", "b200", "h100-pcie", "h100-sxm", "h200", "l40s"]
DATA = Path(__file__).resolve().parents[2] / "energylens" / "data" / "hardware"


def test_all_builtin_gpus_load():
    assert known_gpus() == GPU_KEYS
    for key in GPU_KEYS:
        gpu = load_gpu(key)
        assert gpu.key == key
        assert gpu.name


@pytest.mark.parametrize("key", GPU_KEYS)
def test_every_quantity_sourced_with_known_kind_and_si_unit(key):
    gpu = load_gpu(key)
    for name, qty in gpu.quantities.items():
        assert qty.source.strip(), f"{key}.{name} has no source"
        assert qty.kind in KINDS, f"{key}.{name} kind {qty.kind!r}"
        assert qty.unit == _expected_unit(name)[0], f"{key}.{name} unit {qty.unit!r}"
        if qty.kind in ("derived", "assumed") and qty.value is not None:
            assert qty.note.strip(), f"{key}.{name} is {qty.kind} but says nothing about how"


@pytest.mark.parametrize("key", GPU_KEYS)
def test_every_field_present(key):
    gpu = load_gpu(key)
    for name in FIELDS:
        if name in KERNEL_FAMILY_FIELDS or name == "busy_power":
            continue  # fitted on kernel tables where a GPU has them; spec-derived defaults (busy power 0) otherwise
        names = [name.format(dtype=d) for d in DTYPES] if "{dtype}" in name else [name]
        for n in names:
            assert n in gpu.quantities, f"{key} lacks {n}"


@pytest.mark.parametrize("key", GPU_KEYS)
def test_values_physically_plausible(key):
    gpu = load_gpu(key)
    assert 0 < gpu.idle_power_w < gpu.power_limit_w
    assert 0.5 < gpu.max_memory_efficiency <= 1.0
    assert 1e-11 < gpu.energy_per_byte_j < 1e-9
    assert 1e-6 < gpu.kernel_overhead_s < 1e-5
    assert 1e11 < gpu.hbm_bandwidth_bytes_per_s < 2e13
    assert gpu.l2_bytes < gpu.hbm_capacity_bytes
    for d in DTYPES:
        if gpu.has(f"peak_flops_{d}"):
            assert 0.5 < gpu.max_compute_efficiency(d) <= 1.0
            assert 1e-14 < gpu.energy_per_flop_j(d) < 1e-10
        else:
            assert not gpu.has(f"energy_per_flop_{d}")
    # at max efficiency on both, a GEMM must draw no more than the limit, a weight stream less than it
    stream = (
        gpu.idle_power_w + gpu.hbm_bandwidth_bytes_per_s * gpu.max_memory_efficiency * gpu.energy_per_byte_j
    )
    assert stream < gpu.power_limit_w


def test_a100_has_no_fp8():
    for key in ("a100-sxm-80gb", "a100-sxm-40gb"):
        gpu = load_gpu(key)
        assert not gpu.has("peak_flops_fp8")
        with pytest.raises(SpecError, match="dtype"):
            gpu.peak_flops("fp8")


@pytest.mark.parametrize("key", GPU_KEYS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_derived_energy_per_flop_matches_formula(key, dtype):
    gpu = load_gpu(key)
    if not gpu.has(f"peak_flops_{dtype}"):
        return
    qty = gpu.quantities[f"energy_per_flop_{dtype}"]
    if "aiconfigurator/power_" in qty.source:  # fitted on the kernel power tables (tests/calibration/)
        assert qty.kind in ("fitted", "derived") and gpu.has("busy_power")
        return
    assert qty.kind == "derived"
    expected = (gpu.power_limit_w - gpu.idle_power_w - gpu.busy_power_w) / (  # calibration/derived_power.py
        gpu.peak_flops(dtype) * gpu.max_compute_efficiency(dtype)
    )
    assert qty.value == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(
    "alias,key",
    [
        ("h100", "h100-sxm"),
        ("H100", "h100-sxm"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("A100 80GB", "a100-sxm-80gb"),
        ("NVIDIA H100 SXM5 80GB", "h100-sxm"),
        ("NVIDIA B200 (HGX, 1000 W)", "b200"),
        ("NVIDIA L40S 48GB", "l40s"),
        ("NVIDIA H100 PCIe 80GB", "h100-pcie"),
        ("NVIDIA H200 SXM 141GB", "h200"),
        ("A100-SXM4-80GB", "a100-sxm-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"),
        ("b200", "b200"),
        ("B200", "b200"),
        ("h200", "h200"),
        ("H200", "h200"),
        ("L40S", "l40s"),
        ("H100 PCIe", "h100-pcie"),
        ("H100_SXM", "h100-sxm"),
    ],
)
def test_aliases_resolve(alias, key):
    assert load_gpu(alias).key == key


@pytest.mark.parametrize("key", GPU_KEYS)
def test_aliases_case_insensitive_and_unique(key):
    gpu = load_gpu(key)
    for alias in (*gpu.aliases, gpu.key):
        for variant in (alias, alias.upper(), alias.lower(), f"  {alias} "):
            assert load_gpu(variant).key == key


def test_unknown_gpu_lists_known():
    with pytest.raises(UnknownNameError) as err:
        load_gpu("rtx-9090")
    assert err.value.field == "gpu"
    assert set(GPU_KEYS) <= set(err.value.known)
    assert "h100-sxm" in str(err.value)


def _h100_raw() -> dict:
    return yaml.safe_load((DATA / "gpus" / "h100-sxm.yaml").read_text())


@pytest.mark.parametrize("missing", ["unit", "source", "kind", "value"])
def test_profile_missing_key_names_field(tmp_path, missing):
    raw = _h100_raw()
    del raw["quantities"]["idle_power"][missing]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as err:
        load_gpu(str(path))
    assert f"quantities.idle_power.{missing}" in err.value.field


def test_profile_empty_source_and_wrong_unit_rejected(tmp_path):
    raw = _h100_raw()
    raw["quantities"]["hbm_bandwidth"]["source"] = "  "
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="hbm_bandwidth.source"):
        load_gpu(str(path))
    raw = _h100_raw()
    raw["quantities"]["hbm_bandwidth"]["unit"] = "TB/s"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="hbm_bandwidth.unit"):
        load_gpu(str(path))


def test_user_profile_roundtrip(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(load_gpu("h200").to_dict()))
    gpu = load_gpu(str(path))
    assert gpu.quantities == load_gpu("h200").quantities


# ------------------------------------------------------------------------------------------ links

LINK_KEYS = {"nvlink3", "nvlink4", "nvlink5", "pcie4", "pcie5", "ib-hdr", "ib-ndr"}


def test_links_complete_and_sourced():
    links = load_links()
    assert set(links) == LINK_KEYS
    for key, link in links.items():
        assert isinstance(link.switched, bool)
        for name, (_unit, required) in LINK_FIELDS.items():
            if required:
                assert name in link.quantities, f"{key} lacks {name}"
        for name, qty in link.quantities.items():
            assert qty.source.strip(), f"{key}.{name}"
            assert qty.kind in KINDS
            assert qty.unit == LINK_FIELDS[name][0]
            assert qty.value is not None and qty.value > 0
            if qty.kind in ("derived", "assumed"):
                assert qty.note.strip()
        assert 0 < link.nccl_bus_efficiency <= 1


def test_links_raw_yaml_every_number_sourced():
    raw = yaml.safe_load((DATA / "links.yaml").read_text())
    for key, entry in raw.items():
        for name, val in entry.items():
            if isinstance(val, dict):
                assert {"value", "unit", "kind", "source"} <= set(val), f"{key}.{name}"
                assert str(val["source"]).strip()


def test_gpu_links_exist_and_ordered():
    for key in GPU_KEYS:
        assert get_link(load_gpu(key).link).key == load_gpu(key).link
    bw = {k: get_link(k).bandwidth_bytes_per_s for k in LINK_KEYS}
    assert bw["nvlink3"] < bw["nvlink4"] < bw["nvlink5"]
    assert bw["pcie4"] < bw["pcie5"] < bw["nvlink3"]
    assert bw["ib-hdr"] < bw["ib-ndr"]
    assert get_link("NVLINK4").key == "nvlink4"


def test_unknown_link_and_bad_link_file():
    with pytest.raises(UnknownNameError) as err:
        get_link("nvlink9")
    assert "nvlink4" in err.value.known
    raw = yaml.safe_load((DATA / "links.yaml").read_text())
    del raw["nvlink4"]["latency"]["source"]
    with pytest.raises(SpecError, match="nvlink4.latency.source"):
        parse_links(raw, "links.yaml")
    raw = yaml.safe_load((DATA / "links.yaml").read_text())
    raw["pcie5"]["bandwidth_unidir"]["unit"] = "GB/s"
    with pytest.raises(SpecError, match="pcie5.bandwidth_unidir.unit"):
        parse_links(raw, "links.yaml")


def test_every_printed_name_is_accepted_and_a100_is_ambiguous():
    from energylens.hardware.profile import gpu_names

    for key in GPU_KEYS:
        for name in gpu_names(load_gpu(key)):
            assert load_gpu(name).key == key, name
    for name in ("A100", "a100", "a100-sxm", "NVIDIA A100"):
        with pytest.raises(SpecError) as err:
            load_gpu(name)
        assert "ambiguous" in str(err.value) and "a100-sxm-40gb" in str(err.value) and "a100-sxm-80gb" in str(err.value)


def test_gpus_listing_fits_80_columns(monkeypatch, capsys):
    from energylens.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80
    assert "NVIDIA H100 SXM5 80GB" in out and "2250/4500/9000" in out


def test_hbm_capacity_is_what_a_process_can_allocate():
    """vLLM multiplies gpu_memory_utilization by the memory CUDA reports, not the datasheet's decimal GB:
    measured nvidia-smi totals on H100 SXM and H200, and the derived GPUs follow the same rule (datasheet figure
    read as GiB, less the driver reserve the two readings share)."""
    mib = 2**20
    h100, h200 = load_gpu("h100-sxm"), load_gpu("h200")
    assert h100.hbm_capacity_bytes == 81559 * mib and h200.hbm_capacity_bytes == 143771 * mib
    assert h100.quantities["hbm_capacity"].kind == "measured" == h200.quantities["hbm_capacity"].kind
    r100, r200 = h100.hbm_capacity_bytes / (80 * 2**30), h200.hbm_capacity_bytes / (141 * 2**30)
    assert r100 == pytest.approx(r200, abs=3e-4)  # the same reserve on both parts
    reserve = (r100 + r200) / 2
    for key, nominal_gib in (("b200", 180), ("h100-pcie", 80), ("a100-sxm-80gb", 80), ("a100-sxm-40gb", 40)):
        q = load_gpu(key).quantities["hbm_capacity"]
        assert q.kind == "derived" and q.value == pytest.approx(nominal_gib * 2**30 * reserve, abs=mib), key
