import pytest

from energylens.errors import DimensionError, EinsumError
from energylens.graph.einsum import bind_shapes, parse_einsum


def test_parse_and_dims():
    spec = parse_einsum("btd,dgrk->btgrk")
    assert spec.inputs == ("btd", "dgrk")
    assert spec.output == "btgrk"
    assert spec.contracted == "d"
    sizes = {"b": 2, "t": 3, "d": 4, "g": 5, "r": 6, "k": 7}
    assert spec.flops(sizes) == 2 * 2 * 3 * 4 * 5 * 6 * 7


def test_gemm_mnk_attention_scores():
    spec = parse_einsum("btgrk,bsgk->bgrts")
    m, n, k, batch = spec.gemm_mnk({"b": 2, "t": 10, "g": 8, "r": 4, "k": 128, "s": 50})
    # r (query heads per KV head) only appears in q: GQA kernels pack t*r query rows per KV head into M
    assert (m, n, k, batch) == (10 * 4, 50, 128, 2 * 8)


@pytest.mark.parametrize("bad", ["btd,dk", "btd->->bt", "btd,,dk->bk", "bTd,dk->bk", "bbd,dk->bk", "btd,dk->bz",
                                 "bt,td,dk->bk", "", "b1d->bd"])
def test_malformed_einsum_is_a_clear_error(bad):
    with pytest.raises((EinsumError, DimensionError)) as exc:
        parse_einsum(bad)
    assert "einsum" in str(exc.value)


def test_unknown_dimension_letter_lists_the_legend():
    with pytest.raises(DimensionError) as exc:
        parse_einsum("bqd,dk->bqk")
    assert "'q'" in str(exc.value) and "b=batch" in str(exc.value)


def test_bind_shapes_mismatch():
    spec = parse_einsum("btd,df->btf")
    assert bind_shapes(spec, [(2, 3, 4), (4, 5)]) == {"b": 2, "t": 3, "d": 4, "f": 5}
    with pytest.raises(DimensionError) as exc:
        bind_shapes(spec, [(2, 3, 4), (8, 5)])
    assert "shapes[d]" in str(exc.value) and "(4)" in str(exc.value)
    with pytest.raises(DimensionError):
        bind_shapes(spec, [(2, 3, 0), (0, 5)])
