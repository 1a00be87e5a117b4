"""bench/launches.py: the GPU path's launch counts (counted on CPU) stay where the fused kernels put them."""

from __future__ import annotations

from kernel_checks import load_bench

import kernels


def test_gpu_path_launch_counts():
    bench = load_bench("launches")
    ops = dict(kernels._OPS)
    torch_path = bench.count_step_launches("torch", rows=2, steps=4)
    gpu = bench.count_step_launches("gpu", rows=2, steps=4)
    assert kernels._OPS == ops and kernels.get_backend() == "auto" and kernels._op_backend == {}
    layer = gpu["decoder_layer_ops"]
    # Every decoder layer runs each kernel once, and nothing else but its 7.5 GEMMs: 4 norms (input,
    # post-attention, v, the block tail with its two inner norms), the pre-feed-forward pair, the dense
    # MLP's gated GELU, q and k norm+RoPE, canvas
    # attention reading the cache slots in place (no index_select), the router (norm, top-k), the MoE as
    # align (3) + gate_up + down + combine
    assert layer.pop("triton:_rms_norm_kernel") == 4 and layer.pop("triton:_norm_rope_kernel") == 2
    assert layer.pop("mm") == 7.5  # q, k, v (sliding layers only), o, dense gate / up / down, router
    for k in ("_canvas_attn_kernel", "_rms_norm_pair_kernel", "_gelu_mul_kernel", "_router_norm_kernel",
              "_router_topk_kernel", "_count_kernel", "_layout_kernel", "_scatter_kernel", "_gate_up_kernel",
              "_down_kernel", "_combine_kernel"):
        assert layer.pop("triton:" + k) == 1, k
    assert layer == {}, layer
    # Regression guards at the counts measured when these kernels landed (24.5 per layer, 104.75 outside
    # the layers at 4 steps, 2.625 fp32 logit passes of traffic since the head mode: the sampler reads the
    # bf16 LM head output and the next step's softmax is written straight from it, so neither fp32 logits nor
    # their bf16 copy go through memory); the torch path, the CPU reference, is 184.5.
    assert gpu["decoder_layer"] <= 24.5 and gpu["rest"] <= 104.75, (gpu["decoder_layer"], gpu["rest"])
    assert gpu["logit_passes"] <= 2.625, gpu["logit_passes_by_op"]
    # the head mode ran: the sampler's two calls read the bf16 output (half a pass each); the softmax reads it
    # and writes bf16 probabilities (counted once: it reads the row twice), only on the 3 steps of 4 that
    # another step follows; no epilogue runs
    assert gpu["logit_passes_by_op"]["triton:_fused_sample_kernel"] == 1.0
    assert gpu["logit_passes_by_op"]["triton:_softmax_kernel"] == 0.75
    assert torch_path["decoder_layer"] > 6 * gpu["decoder_layer"]
    assert gpu["steady_syncs"] == 0 and "triton:_fused_sample_kernel" in gpu["rest_ops"]
    assert "triton:_derive_keys_kernel" in gpu["rest_ops"] and "bitwise_xor" not in gpu["rest_ops"]
    assert "triton:_epilogue_kernel" not in gpu["rest_ops"] and "triton:_softmax_kernel" in gpu["rest_ops"]


def test_hooked_rows_keep_the_head_mode():
    # rows whose commit hook reads the logits (structured output) keep the raw bf16 output and process a row
    # only at its commit (the epilogue then runs on that row alone): about 2.4 fp32 passes less per decoder
    # forward than materialising every step
    bench = load_bench("launches")
    head = bench.count_step_launches("gpu", rows=2, steps=4, hooked=True)
    old = bench.count_step_launches("gpu", rows=2, steps=4, hooked=True, head_mode=False)
    assert head["logit_passes"] <= old["logit_passes"] - 2.3, (head["logit_passes"], old["logit_passes"])
    assert head["logit_passes_by_op"]["triton:_epilogue_kernel"] == 0.375  # 2 row commits over 4 forwards
    assert head["logit_passes_by_op"]["triton:_fused_sample_kernel"] == 1.0
    assert old["logit_passes_by_op"]["triton:_fused_sample_kernel"] == 2.0
    assert head["steady_syncs"] == 0

