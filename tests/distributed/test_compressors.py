"""Compressors: packing, payload sizes, unbiasedness and the stated variance bounds."""

import pytest
import torch

from l2o.distributed.compressors import QSGD, Identity, RandomK, ScaledSign, TopK, create, pack_bits, unpack_bits


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("count", [1, 7, 13, 64])
def test_pack_roundtrip(bits, count):
    codes = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(count), dtype=torch.int64)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-count * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, count).long(), codes)


ALL = [Identity(), QSGD(1, 256, "inf"), QSGD(1, 64, "2"), QSGD(5, 32, "2"), ScaledSign(64), TopK(0.1), RandomK(0.2)]


@pytest.mark.parametrize("comp", ALL, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_payload_is_packed_and_sized(comp, dtype):
    x = torch.randn(1000, dtype=dtype, generator=torch.Generator().manual_seed(0))
    payload = comp.compress(x, torch.Generator().manual_seed(1))
    assert payload.dtype == torch.uint8
    assert payload.numel() == comp.nbytes(1000, dtype)
    y = comp.decompress(payload, 1000, dtype)
    assert y.dtype == dtype and y.shape == x.shape
    if not isinstance(comp, Identity):
        assert comp.bits_per_element(1000, torch.float32) < 32
    else:
        assert torch.equal(y, x)


def test_bits_per_element_of_ternary_qsgd():
    # 2-bit codes plus one float32 scale per block of 256
    assert QSGD(1, 256).bits_per_element(256 * 4) == pytest.approx(2 + 32 / 256)


@pytest.mark.parametrize("comp", [QSGD(1, 256, "inf"), QSGD(1, 64, "2"), QSGD(3, 16, "2"), RandomK(0.25)], ids=repr)
def test_unbiased_and_within_variance_bound(comp):
    x = torch.randn(512, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[::7] *= 10  # uneven magnitudes
    gen = torch.Generator().manual_seed(4)
    draws = torch.stack([comp(x, gen) for _ in range(2000)])
    mean = draws.mean(0)
    # unbiased: the squared error of the mean of n draws is about (total variance)/n; a bias of
    # 10 % of |x| would be 100 times larger
    total_variance = draws.var(0).sum()
    assert (mean - x).pow(2).sum() <= 3 * total_variance / 2000
    variance = (draws - x).pow(2).sum(1).mean() / x.pow(2).sum()
    assert variance <= comp.omega(512) * 1.05


@pytest.mark.parametrize("comp", [ScaledSign(64), TopK(0.1)], ids=repr)
def test_biased_compressors_contract(comp):
    for seed in range(5):
        x = torch.randn(300, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        err = (comp(x) - x).pow(2).sum() / x.pow(2).sum()
        assert err <= comp.omega(300) + 1e-12


def test_scaled_sign_values():
    x = torch.tensor([1.0, -3.0, 0.0, 2.0])
    assert torch.equal(ScaledSign(4)(x), torch.tensor([1.5, -1.5, 1.5, 1.5]))


def test_topk_keeps_largest():
    x = torch.tensor([0.1, -5.0, 0.2, 3.0, 0.0])
    assert torch.equal(TopK(0.4)(x), torch.tensor([0.0, -5.0, 0.0, 3.0, 0.0]))


def test_zero_vector_and_tiny_tensors():
    for comp in ALL:
        assert torch.equal(comp(torch.zeros(5)), torch.zeros(5))
        assert comp(torch.ones(1), torch.Generator().manual_seed(0)).shape == (1,)


def test_create_specs_and_errors():
    c = create("qsgd:s=2,block=128,norm=inf")
    assert isinstance(c, QSGD) and (c.levels, c.block, c.norm, c.bits) == (2, 128, "inf", 4)
    assert isinstance(create("topk:ratio=0.05"), TopK)
    with pytest.raises(ValueError, match="unknown compressor"):
        create("zip")
    with pytest.raises(ValueError, match="unknown option"):
        create("qsgd:bits=3")
    with pytest.raises(ValueError, match="levels"):
        create("qsgd:s=0")
    with pytest.raises(ValueError, match="ratio"):
        create("randk:ratio=2")
    with pytest.raises(ValueError, match="not a int"):
        create("qsgd:s=x")
