"""fused_sample: torch reference vs definitions, and the Triton kernel (interpreter) vs the reference."""

from __future__ import annotations

import pytest
import torch
from kernel_checks import assert_close

from kernels.logit_epilogue import logit_epilogue_triton
from kernels.sampler import (
    fused_sample_torch,
    fused_sample_triton,
    head_sample_torch,
    head_sample_triton,
)
from kernels.stream_keys import derive_keys_torch, derive_keys_triton, mix32, uniform_noise
from kernels.stream_keys import selfcheck as selfcheck_keys


def _inputs(N: int, V: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, V, generator=g) * 3).clamp(-30, 30).to(dtype)
    inv_t = torch.rand(N, generator=g) * 2 + 0.5
    keys = derive_keys_torch(torch.arange(N) + 11, 2, 5, 1)
    return logits, inv_t, keys


def test_reference_matches_definitions():
    logits, inv_t, keys = _inputs(7, 333)
    logits[3, 10:] = float("-inf")  # masked tokens (e.g. a grammar) must keep the stats finite
    am, ent, smp, mx, lse = fused_sample_torch(logits, inv_t, keys)
    x = logits * inv_t[:, None]
    assert torch.equal(am, x.argmax(-1))
    assert_close("max", mx, x.max(-1).values, 0)
    assert_close("lse", lse, torch.logsumexp(x, -1), 1e-5, 1e-6)
    assert_close("entropy", ent, torch.distributions.Categorical(logits=x).entropy(), 1e-5, 1e-5)
    assert 0 <= smp.min() and smp.max() < 333 and smp[3] < 10


def test_reference_chunking_is_invisible(monkeypatch):
    logits, inv_t, keys = _inputs(9, 257)
    need = torch.tensor([True, False] * 4 + [True])
    full = fused_sample_torch(logits, inv_t, keys, need)
    monkeypatch.setattr("kernels.sampler._CHUNK_ELEMS", 600)  # 2 rows per chunk
    for a, b in zip(full, fused_sample_torch(logits, inv_t, keys, need)):
        assert torch.equal(a, b)
    assert (full[2][~need] == -1).all() and (full[2][need] >= 0).all()


def test_gumbel_sample_follows_softmax():
    V, n = 6, 6000
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5, 1.5]]).expand(n, V)
    keys = derive_keys_torch(123, 0, torch.arange(n), 1)
    smp = fused_sample_torch(logits, torch.ones(n), keys)[2]
    freq = torch.bincount(smp, minlength=V).float() / n
    p = torch.softmax(logits[0], -1)
    assert (freq - p).abs().max() < 0.03, f"empirical {freq.tolist()} vs softmax {p.tolist()}"


def test_noise_and_keys_properties():
    u = uniform_noise(mix32(torch.tensor([5, 6])), torch.arange(4096))
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02
    assert (u[0] != u[1]).float().mean() > 0.99  # different rows, different streams
    k1 = derive_keys_torch(torch.tensor([1, 2]), torch.tensor([0, 0]), 3, 4)
    assert k1.shape == (8,) and (k1 >= 0).all() and k1.unique().numel() == 8
    assert torch.equal(k1, derive_keys_torch(torch.tensor([1, 2]), torch.tensor([0, 0]), 3, 4))
    assert not torch.equal(k1, derive_keys_torch(torch.tensor([1, 2]), torch.tensor([0, 0]), 4, 4))
    assert derive_keys_torch(-1, 0, 0, 2).min() >= 0  # negative seeds are fine


@pytest.mark.parametrize("seed,canvas,step,C", [
    (torch.tensor([0, 1, -1, 2**62 + 5, -(2**40) - 3]), 0, torch.arange(5) * 2 + 2, 7),  # odd C, signs
    (torch.tensor([11]), torch.tensor([3]), torch.tensor([9]), 256),  # one row, the real canvas
    (torch.tensor([4, 4, 4]), torch.tensor([0, 1, 2**33 + 1]), 5, 1),  # canvas above 32 bits
])
def test_triton_derive_keys_bit_identical(seed, canvas, step, C):
    want = derive_keys_torch(seed, canvas, step, C)
    got = derive_keys_triton(seed, canvas, step, C)
    assert got.dtype == torch.int64 and torch.equal(got, want), (got.tolist()[:8], want.tolist()[:8])


def test_triton_derive_keys_selfcheck_and_shapes():
    assert selfcheck_keys(torch.device("cpu"))
    assert derive_keys_triton(torch.zeros(0, dtype=torch.long), 0, 0, 4).shape == (0,)
    with pytest.raises(ValueError, match="do not broadcast"):
        derive_keys_triton(torch.arange(3), torch.arange(2), 0, 4)


@pytest.mark.parametrize("N,V,block,dtype", [(1, 1001, 256, torch.float32), (3, 515, 128, torch.bfloat16)])
def test_triton_matches_reference(N, V, block, dtype):
    logits, inv_t, keys = _inputs(N, V, seed=V, dtype=dtype)
    need = torch.tensor([True, False, True][:N])
    for need_arg in (None, need):
        ref = fused_sample_torch(logits, inv_t, keys, need_arg)
        out = fused_sample_triton(logits, inv_t, keys, need_arg, block_v=block)
        assert torch.equal(out[0], ref[0]), f"argmax {out[0]} vs {ref[0]}"
        assert torch.equal(out[2], ref[2]), f"sample {out[2]} vs {ref[2]} (noise hash must agree bit-for-bit)"
        for name, i in (("entropy", 1), ("max", 3), ("lse", 4)):
            assert_close(name, out[i], ref[i], 1e-5, 1e-5)


def test_sample_only_skips_unsampled_rows():
    logits, inv_t, keys = _inputs(4, 300, seed=8)
    need = torch.tensor([False, True, False, True])
    full = fused_sample_triton(logits, inv_t, keys, need, block_v=128)
    only = fused_sample_triton(logits, inv_t, keys, need, sample_only=True, block_v=128)
    assert torch.equal(only[2], full[2]) and (only[2][~need] == -1).all()
    assert torch.equal(only[0][need], full[0][need])  # sampled rows still get their statistics
    ref = fused_sample_torch(logits, inv_t, keys, need, sample_only=True)  # the reference ignores the hint
    assert torch.equal(ref[2], full[2]) and torch.equal(ref[0], full[0])


def test_triton_sample_on_row_subset_equals_full():
    logits, inv_t, keys = _inputs(3, 300, seed=3)
    full = fused_sample_triton(logits, inv_t, keys, block_v=128)[2]
    idx = torch.tensor([2, 0])
    sub = fused_sample_triton(logits[idx], inv_t[idx], keys[idx], block_v=128)[2]
    assert torch.equal(sub, full[idx])


@pytest.mark.parametrize("V,block,chunks", [(1001, 128, 3), (515, 128, 9), (300, 128, 2)])
def test_column_chunks_merge_to_one_pass(V, block, chunks):
    # chunks of whole tiles (more asked than tiles: one per tile) merged by their running statistics: the
    # same argmax and sample columns as one pass, statistics within rounding, sample_only respected
    logits, inv_t, keys = _inputs(3, V, seed=V + chunks)
    logits[0, 5] = logits[0].max() + 1  # a tie across chunks: the lowest column wins, as in one pass
    logits[0, V - 3] = logits[0, 5]
    logits[2, : V // 2] = float("-inf")  # a row whose first chunks are fully masked
    need = torch.tensor([True, False, True])
    ref = fused_sample_torch(logits, inv_t, keys, need)
    for only in (False, True):
        out = fused_sample_triton(logits, inv_t, keys, need, sample_only=only, block_v=block, chunks=chunks)
        assert torch.equal(out[2], ref[2])
        rows = need if only else torch.ones(3, dtype=torch.bool)
        assert torch.equal(out[0][rows], ref[0][rows]) and out[0][0] == 5
        for name, i in (("entropy", 1), ("max", 3), ("lse", 4)):
            assert_close(f"chunked {name}", out[i][rows], ref[i][rows], 1e-5, 1e-5)
    x, temp, hkeys, hneed = _head_inputs(2, 3, 433, seed=5, dtype=torch.bfloat16)
    href = head_sample_torch(x, 30.0, temp, hkeys, hneed)
    hout = head_sample_triton(x, 30.0, temp, hkeys, hneed, block_v=128, chunks=chunks)
    assert torch.equal(hout[0], href[0]) and torch.equal(hout[2], href[2])
    assert_close("chunked head entropy", hout[1], href[1], 1e-4, 1e-5)
    with pytest.raises(ValueError, match="chunks must be >= 1"):
        fused_sample_triton(logits, inv_t, keys, chunks=0)

def _head_inputs(R, C, V, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(R * C, V, generator=g) * 40).to(dtype)  # beyond the softcap's linear range
    x[1, 7:] = float("-inf")  # masked vocabulary stays finite through the softcap
    temp = torch.rand(R, generator=g) + 0.4
    keys = derive_keys_torch(torch.arange(R) + 5, 1, 3, C)
    need = torch.arange(R * C) % 3 != 1
    return x, temp, keys, need


@pytest.mark.parametrize("dtype,with_temp", [(torch.float32, True), (torch.bfloat16, True),
                                             (torch.bfloat16, False)])
def test_head_mode_matches_reference(dtype, with_temp):
    x, temp, keys, need = _head_inputs(2, 3, 433, seed=5, dtype=dtype)
    temp = temp if with_temp else None
    ref = head_sample_torch(x, 30.0, temp, keys, need)
    out = head_sample_triton(x, 30.0, temp, keys, need, block_v=128)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2])
    for name, i in (("entropy", 1), ("max", 3), ("lse", 4)):
        assert_close(f"head {name}", out[i], ref[i], 1e-4, 1e-5)
    assert out[2][1] < 7  # the masked row only samples its visible tokens


def test_head_mode_is_the_materialised_path_bit_for_bit():
    # the engine switches between the two paths by batch content (commit hooks keep the fp32 logits), so a
    # row's statistics and sample must not depend on which one ran: the kernels share the softcap helper and
    # divide by the same temperature
    x, temp, keys, need = _head_inputs(2, 4, 517, seed=9, dtype=torch.bfloat16)
    y, _ = logit_epilogue_triton(x.view(2, 4, -1), 30.0, temp)
    mat = fused_sample_triton(y.view(8, -1), torch.ones(8), keys, need, block_v=128)
    head = head_sample_triton(x, 30.0, temp, keys, need, block_v=128)
    for a, b in zip(mat, head):
        assert torch.equal(a, b)
    only = head_sample_triton(x, 30.0, temp, keys, need, sample_only=True, block_v=128)
    assert torch.equal(only[2], mat[2])
    with pytest.raises(ValueError, match="temperature_R must be"):
        head_sample_triton(x, 30.0, torch.ones(3), keys, need)


@pytest.mark.gpu
def test_gpu_head_mode_chunked_real_vocab(cuda):
    # one canvas of rows in 8 column chunks: the same argmax and samples as one pass, at the real vocabulary
    x, temp, keys, need = (t.to(cuda) for t in _head_inputs(2, 128, 262144, seed=2, dtype=torch.bfloat16))
    one = head_sample_triton(x, 30.0, temp, keys, need)
    eight = head_sample_triton(x, 30.0, temp, keys, need, chunks=8)
    assert torch.equal(one[0], eight[0]) and torch.equal(one[2], eight[2])
    for i in (1, 3, 4):
        assert_close("chunked gpu stats", eight[i], one[i], 1e-4, 1e-5)


@pytest.mark.gpu
def test_gpu_head_mode_real_vocab(cuda):
    x, temp, keys, need = (t.to(cuda) for t in _head_inputs(2, 128, 262144, seed=1, dtype=torch.bfloat16))
    y, _ = logit_epilogue_triton(x.view(2, 128, -1), 30.0, temp)
    mat = fused_sample_triton(y.view(256, -1), torch.ones(256, device=cuda), keys, need)
    head = head_sample_triton(x, 30.0, temp, keys, need)
    for a, b in zip(mat, head):  # compiled, the two kernels must still agree bit for bit
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_gpu_real_vocab(cuda):
    N, V = 256, 262144
    logits, inv_t, keys = (t.to(cuda) for t in _inputs(N, V))
    need = (torch.arange(N, device=cuda) % 3) == 0
    ref = fused_sample_torch(logits, inv_t, keys, need)
    out = fused_sample_triton(logits, inv_t, keys, need)
    assert torch.equal(out[0], ref[0])
    assert (out[2] == ref[2]).float().mean() > 0.99  # log() may differ in the last ulp on rare near-ties
    for name, i in (("entropy", 1), ("max", 3), ("lse", 4)):
        assert_close(name, out[i], ref[i], 1e-3, 1e-4)


@pytest.mark.gpu
def test_gpu_derive_keys(cuda):
    seed = torch.randint(-(2**62), 2**62, (16,)).to(cuda)
    canvas, step = torch.arange(16, device=cuda) % 5, torch.arange(16, device=cuda) * 2 + 2
    want = derive_keys_torch(seed, canvas, step, 256)
    assert torch.equal(derive_keys_triton(seed, canvas, step, 256), want)
