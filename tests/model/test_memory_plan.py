"""model/memory_plan.py and `dgbatch plan-memory`: weight bytes by scheme for the full-size model, the
canvases that fit, and traced CPU forwards that check the plan's workspace list against what the code
allocates.

The traces run one denoising step of a small model in the GPU head mode (the sampler and softmax kernels in
Triton's interpreter, attention in its eager torch form as on a GPU at 8+ canvases) and record, op by op,
the bytes of every live tensor storage the step created (weights and KV cache excluded)."""

from __future__ import annotations

import dataclasses
import json
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import kernels
from engine.denoise import CanvasBatch, RowHost, denoise_step
from engine.heads import FusedHead, fast_head
from engine.kept_logits import KeptLogits
from engine.params import GenerationParams
from engine.sampler import RowKeys, RowNoise
from engine.scheduler import SlotCache
from jobs.cli import main
from model.config import DiffusionGemmaConfig
from model.memory_plan import (
    GIB,
    RESERVE_BYTES,
    MemoryPlan,
    plan_memory,
    prefill_bytes,
    vllm_workspace_bytes,
    vocab_buffers,
    weights_by_part,
)
from model.transformer import DiffusionGemma

FULL = DiffusionGemmaConfig.full_size()
V_TRACE = 1000  # a vocabulary no other dimension of the traced model equals


# ---- the full-size model -------------------------------------------------------------------------------
def test_full_size_parameters_and_weight_bytes_by_scheme():
    _, params = weights_by_part(FULL, "bf16")
    want = {"experts": 22.84e9, "attention": 1.11e9, "dense": 0.57e9, "embeddings": 0.74e9}
    for part, n in want.items():
        assert abs(params[part] - n) < 0.006e9, (part, params[part])
    assert abs(sum(params.values()) - 25.25e9) < 0.01e9
    total = {s: plan_memory(FULL, s, 80 * GIB, 4096).weights_bytes for s in ("bf16", "fp8", "w4a16", "nvfp4")}
    assert abs(total["bf16"] - 50.5e9) < 0.1e9  # 2 bytes a parameter
    assert abs(total["fp8"] - 26.0e9) < 0.2e9  # 1 byte a quantized parameter, the embedding stays bf16
    assert total["w4a16"] < 17e9 and total["nvfp4"] < 17e9
    assert total["w4a16"] < total["nvfp4"] < total["fp8"] < total["bf16"]
    # w4a16 zero points and finer groups cost bytes; the group does not touch the bf16 embedding
    g32 = plan_memory(FULL, "w4a16", 80 * GIB, 4096, 32)
    asym = plan_memory(FULL, "w4a16", 80 * GIB, 4096, 32, asymmetric=True)
    assert total["w4a16"] < g32.weights_bytes < asym.weights_bytes
    assert g32.weights_by_part["embeddings"] == 2 * 262_144 * 2816


def test_weights_match_what_the_quantized_model_holds():
    """The plan's bytes equal model/quant/modules.py weight_bytes of the tiny model quantized in place."""
    from model.quant.modules import quantize_model, weight_bytes
    from model.quant.scheme import QuantScheme

    cfg = DiffusionGemmaConfig.tiny()
    for scheme, group in (("bf16", 128), ("fp8", 128), ("w4a16", 32), ("w4a16", 128)):
        model = DiffusionGemma(cfg).to(torch.bfloat16)
        if scheme != "bf16":
            quantize_model(model, QuantScheme.on_load(scheme, group))
        assert weight_bytes(model) == sum(weights_by_part(cfg, scheme, group)[0].values()), (scheme, group)


def test_canvases_on_a_24_gib_card_at_4096_context():
    """W4A16 on 24 GiB at 4096 tokens of context: 13 canvases (issue 23 asks for 8). Sliding layers keep a
    ring of W - 1 + 512 = 1535 slots per row (model/cache.py) instead of all 4096 tokens: 0.40 GB a row
    instead of 0.92 GB; a 4096-token prompt is encoded in chunks of 512 (0.38 GB instead of 2.9 GB
    unchunked). 14 rows need 11.25 GB for the decode step against 10.55 GB left after weights (14.14 GB)
    and the 1 GiB reserve."""
    plan = plan_memory(FULL, "w4a16", 24 * GIB, 4096)
    assert plan.weights_bytes < 17e9 and plan.reserve_bytes == RESERVE_BYTES
    assert plan.canvases_fit == 13 >= 8 and plan.limit == "decode step"
    assert plan.phases(14)["decode step"] > plan.available_bytes >= plan.peak_bytes(13)
    assert all(v <= plan.available_bytes for v in plan.phases(13).values())
    # K and V of 25 sliding layers over their 1535-slot ring and of 5 global layers at 4096 tokens
    assert plan.kv_cache_bytes == 1535 * 25 * 2 * 8 * 256 * 2 + 4096 * 5 * 2 * 2 * 512 * 2 + 4096 + 8
    full_length = 4096 * (25 * 2 * 8 * 256 * 2 + 5 * 2 * 2 * 512 * 2) + 4096 + 8
    assert plan.kv_cache_bytes < 0.45 * full_length
    # the chunked prefill is O(chunk x context): under a sixth of the one-pass [16, 4096, 4096] scores
    assert plan.prefill_bytes < 0.4e9 < 16 * 4096 * 4096 * 10 / 6
    assert prefill_bytes(FULL, 1535) > prefill_bytes(FULL, 4096)  # a prompt that fits the ring: one pass
    # contexts that fit the ring cost what the full-length layout does
    short = plan_memory(FULL, "w4a16", 24 * GIB, 1280)
    assert short.kv_cache_bytes == 1280 * (25 * 2 * 8 * 256 * 2 + 5 * 2 * 2 * 512 * 2) + 1280 + 8


def test_workspace_against_vllms_sampling_temporaries():
    """vLLM's six fp32 [256, V] temporaries are 24 bytes a position and vocabulary entry; our vocabulary
    buffers are three bf16 ones (6 bytes: exactly a quarter), the whole decode-step workspace a bit more."""
    vllm = vllm_workspace_bytes(FULL)
    assert vllm == 6 * 256 * 262_144 * 4 == 1_610_612_736  # 1.61 GB = 1.50 GiB per sequence
    plan = plan_memory(FULL, "w4a16", 24 * GIB, 4096)
    vocab = vocab_buffers().step_act * 256 * 262_144 * 2
    assert 4 * vocab == vllm
    assert vocab < plan.workspace_bytes < 0.26 * vllm
    hooks = plan_memory(FULL, "w4a16", 24 * GIB, 4096, keep_logits=True)
    assert plan.workspace_bytes < hooks.workspace_bytes < hooks.boundary_bytes + hooks.held_bytes


def test_canvases_fit_is_monotone_in_memory_and_antitone_in_context():
    cards = (14, 16, 20, 24, 32, 48, 80, 141)
    by_mem = [plan_memory(FULL, "w4a16", g * GIB, 4096).canvases_fit for g in cards]
    assert by_mem == sorted(by_mem) and by_mem[0] == 0 and by_mem[-1] > 50
    contexts = (256, 1024, 2048, 4096, 8192, 16384)
    by_ctx = [plan_memory(FULL, "w4a16", 32 * GIB, c).canvases_fit for c in contexts]
    assert by_ctx == sorted(by_ctx, reverse=True) and by_ctx[0] > by_ctx[-1]
    starved = plan_memory(FULL, "bf16", 24 * GIB, 4096)
    assert starved.canvases_fit == 0 and starved.limit == "weights"


def test_plan_checks_itself_and_its_arguments():
    plan = plan_memory(FULL, "fp8", 48 * GIB, 2048)
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(MemoryPlan)}
    with pytest.raises(ValueError, match="canvases_fit"):
        MemoryPlan(**{**fields, "canvases_fit": plan.canvases_fit + 1})
    with pytest.raises(ValueError, match="canvases_fit"):
        MemoryPlan(**{**fields, "canvases_fit": plan.canvases_fit - 1})
    with pytest.raises(ValueError, match="kv_cache_bytes"):
        MemoryPlan(**{**fields, "kv_cache_bytes": -1})
    with pytest.raises(ValueError, match="scheme"):
        plan_memory(FULL, "int8", 24 * GIB, 4096)
    with pytest.raises(ValueError, match="context"):
        plan_memory(FULL, "w4a16", 24 * GIB, 0)
    with pytest.raises(ValueError, match="prompt_tokens"):
        plan_memory(FULL, "w4a16", 24 * GIB, 4096, prompt_tokens=5000)


# ---- traced CPU forwards: the plan's workspace list against the code -------------------------------------
class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the live tensor storages created by ops (or adopted), over all and over those whose
    last dim is V. A storage lives while any tensor seen on it does; `skip` storages are never counted."""

    def __init__(self, V: int, skip: list[torch.Tensor]):
        super().__init__()
        self.V = V
        self.skip = {t.untyped_storage().data_ptr() for t in skip}
        self.refs: dict[int, int] = {}
        self.size: dict[int, tuple[int, bool]] = {}
        self.peak = self.peak_vocab = 0

    def adopt(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st.data_ptr()
        if key in self.skip or st.nbytes() == 0:
            return
        if key not in self.refs:
            self.refs[key] = 0
            self.size[key] = (st.nbytes(), t.dim() > 0 and t.shape[-1] == self.V)
        self.refs[key] += 1
        weakref.finalize(t, self._drop, key)

    def _drop(self, key: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key], self.size[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.adopt(t)
        self.peak = max(self.peak, sum(n for n, _ in self.size.values()))
        self.peak_vocab = max(self.peak_vocab, sum(n for n, v in self.size.values() if v))
        return out


@pytest.fixture(scope="module")
def traced_model():
    torch.manual_seed(0)
    tiny = DiffusionGemmaConfig.tiny()
    cfg = dataclasses.replace(tiny, text=dataclasses.replace(tiny.text, vocab_size=V_TRACE))
    return DiffusionGemma(cfg).to(torch.bfloat16).eval()


def _fixed(model, cache) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers(), *cache.k, *cache.v, cache.valid_BS, cache.length_B]


def _head_mode_step(model, ctx: int, keep_logits: bool, B: int = 2) -> _LiveBytes:
    """Encode B prompts of ctx tokens, take one step, then trace the second (self-conditioned) step."""
    C, V = model.config.canvas_length, model.config.text.vocab_size
    cache = model.new_cache(B, ctx)
    g = torch.Generator().manual_seed(1)
    model.encode(torch.randint(0, V, (B, ctx), generator=g), cache,
                 positions_BT=torch.arange(ctx).expand(B, ctx))
    noise = RowNoise()
    head = fast_head(noise, torch.device("cpu"))
    assert type(head) is FusedHead
    p = GenerationParams(max_new_tokens=2 * C, max_denoising_steps=4, stability_threshold=1,
                         confidence_threshold=0.005)
    keys = RowKeys(torch.arange(B), torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long))
    rows = [RowHost(p, ctx, p.max_denoising_steps, reads_logits=keep_logits) for _ in range(B)]
    st = CanvasBatch.start(noise.init_canvas(keys, C, V, torch.device("cpu")), keys, rows)
    denoise_step(model, cache, st, head, torch.arange(B))
    trace = _LiveBytes(V, _fixed(model, cache))
    held = [getattr(st, f.name) for f in dataclasses.fields(st)] + [st.kept and st.kept.x_BCV]
    for t in held:
        if isinstance(t, torch.Tensor):
            trace.adopt(t)  # what the batch holds between steps counts
    with trace:
        denoise_step(model, cache, st, head, torch.arange(B))
    return trace


@pytest.fixture
def head_mode(monkeypatch):
    """The GPU step's sampler and softmax kernels in Triton's interpreter; everything else the torch path."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with torch.no_grad(), kernels.use_backend("triton", ops=("head_sample", "fused_sample", "softmax",
                                                             "derive_keys")):
        yield


@pytest.mark.parametrize("keep_logits", [False, True])
def test_vocabulary_buffers_of_a_step_are_the_documented_ones(traced_model, head_mode, keep_logits):
    C, V, B = traced_model.config.canvas_length, V_TRACE, 2
    trace = _head_mode_step(traced_model, 16, keep_logits, B)
    vb = vocab_buffers(keep_logits, adaptive_stop=True)
    assert trace.peak_vocab == B * vb.step_act * C * V * 2  # bf16 buffers; no fp32 [C, V] without steering
    assert vb.step_act == (5 if keep_logits else 3)


@pytest.mark.parametrize("ctx,chunk", [(16, 512), (300, 512), (300, 200)])
def test_decode_step_workspace_matches_the_plan(traced_model, head_mode, monkeypatch, ctx, chunk):
    """ctx 16: the LM head's phase is the peak; ctx 300: the attention scores over the context are (also
    with a ring of 7 + 200 slots, which the row has wrapped: sliding layers read the whole ring)."""
    B = 2
    monkeypatch.setattr(traced_model, "window_chunk", chunk)
    trace = _head_mode_step(traced_model, ctx, False, B)
    plan = plan_memory(traced_model.config, None, GIB, ctx, window_chunk=chunk)
    assert abs(trace.peak / B - plan.workspace_bytes) < 0.03 * plan.workspace_bytes, (trace.peak / B, plan)


@pytest.mark.parametrize("chunk", [512, 64])
def test_prefill_matches_the_plan(traced_model, head_mode, monkeypatch, chunk):
    """chunk 512: one pass over the 300 tokens; chunk 64: five causal chunks through a 71-slot ring."""
    P, V = 300, V_TRACE
    monkeypatch.setattr(traced_model, "window_chunk", chunk)
    cache = traced_model.new_cache(2, P)
    trace = _LiveBytes(V, _fixed(traced_model, cache))
    ids = torch.randint(0, V, (1, P), generator=torch.Generator().manual_seed(2))
    with trace:  # the engine's call for one prompt joining a fresh slot
        traced_model.encode(ids, cache, positions_BT=torch.arange(P)[None], rows_B=torch.tensor([1]),
                            len_range=(0, 0))
    want = prefill_bytes(traced_model.config, P, window_chunk=chunk)
    assert abs(trace.peak - want) < 0.03 * want, (trace.peak, want)
    if chunk < P:
        assert want < 0.5 * prefill_bytes(traced_model.config, P)


@pytest.mark.parametrize("keep_logits", [False, True])
def test_canvas_boundary_copies_are_bounded_by_the_plan(traced_model, keep_logits):
    """engine/fast.py at a canvas boundary: 3 of 4 rows keep denoising, 1 restarts, the old batch is alive
    until the concatenation is assigned. At most 3 copies of each held [C, V] buffer per canvas."""
    C, V, B = traced_model.config.canvas_length, V_TRACE, 4
    keys = RowKeys(torch.arange(B), torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long))
    rows = [RowHost(GenerationParams(max_new_tokens=C, max_denoising_steps=2), 0, 2) for _ in range(B)]
    batch = CanvasBatch.start(torch.zeros(B, C, dtype=torch.long), keys, rows)
    batch.sc = torch.zeros(B, C, V, dtype=torch.bfloat16)  # the head mode's softmax state
    if keep_logits:
        batch.kept = KeptLogits(torch.zeros(B, C, V, dtype=torch.bfloat16), None, 30.0)
    restart = CanvasBatch.start(torch.zeros(1, C, dtype=torch.long), keys.select(torch.tensor([3])), rows[3:])
    trace = _LiveBytes(V, [])
    for t in (batch.sc, batch.kept and batch.kept.x_BCV):
        if t is not None:
            trace.adopt(t)
    with trace:
        new = CanvasBatch.cat([batch.select([0, 1, 2]), restart])
    assert new.size == B and new.sc.shape == (B, C, V)
    unit = C * V * 2
    bound = B * vocab_buffers(keep_logits).boundary_act * unit
    # argmax: old 4 + kept 3 + fill 1 + result 4 rows; hooks: last_BCV's copies too, one row short of 3 each
    assert bound - (unit if keep_logits else 0) == trace.peak_vocab <= bound


def test_cache_growth_holds_the_old_and_the_new_rows(traced_model):
    """engine/scheduler.py SlotCache admitting 5 rows from empty (no KV budget, the pipeline's case): rows
    1, 2, 4, 5, and the 4-row cache is alive while the 5-row one is filled, layer by layer."""
    C, ctx, N = traced_model.config.canvas_length, 40, 5
    slots = SlotCache(traced_model, max_rows=N, budget_bytes=None, length_step=C)
    trace = _LiveBytes(V_TRACE, [])
    with trace:
        assert [slots.try_admit(ctx) for _ in range(N)] == list(range(N))
    plan = plan_memory(traced_model.config, None, GIB, ctx)
    want = (4 + N) * plan.kv_cache_bytes + 4 * plan.resize_copy_bytes
    assert slots.cache.max_len == 48 and plan.phases(N)["cache growth"] == want
    assert want <= trace.peak < want + 256  # + the slot ids


# ---- the CLI ------------------------------------------------------------------------------------------
def test_cli_table_and_json(capsys):
    assert main(["plan-memory", "full-size", "--quantization", "w4a16", "--gpu-memory", "24GiB",
                 "--context", "4096"]) == 0
    out = capsys.readouterr().out
    assert "canvases per forward that fit: 13" in out and "weights: routed experts" in out
    assert "KV cache per row (4096 tokens)" in out and "issue 50699" in out
    assert main(["plan-memory", "full-size", "--quantization", "w4a16", "--gpu-memory", "25769803776",
                 "--context", "4096", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    plan = plan_memory(FULL, "w4a16", 24 * GIB, 4096)
    assert got["canvases_fit"] == 13 and got["weights_bytes"] == plan.weights_bytes
    for key in ("weights_by_part", "reserve_bytes", "kv_cache_bytes", "workspace_bytes", "boundary_bytes",
                "prefill_bytes", "group_size", "vllm_workspace_bytes", "limit"):
        assert key in got, key
    assert got["weights_by_part"] == plan.weights_by_part and got["group_size"] == 128
    assert main(["plan-memory", "full-size", "--quantization", "w4a16", "--gpu-memory", "24GiB",
                 "--context", "4096", "--prompt-tokens", "1024", "--commit-hooks", "--json"]) == 0
    hooks = json.loads(capsys.readouterr().out)
    assert hooks["prompt_tokens"] == 1024 and hooks["prefill_bytes"] < got["prefill_bytes"]
    assert hooks["workspace_bytes"] > got["workspace_bytes"] and hooks["batch_bytes"] == 256 * 262_144 * 4


def test_cli_reads_a_config_and_its_quantization_config(tmp_path, capsys):
    cfg = DiffusionGemmaConfig.tiny().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["plan-memory", str(tmp_path), "--gpu-memory", "2 GB", "--context", "64", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["scheme"] == "bf16" and got["gpu_memory_bytes"] == 2 * 10**9
    qc = {"quant_method": "compressed-tensors", "format": "pack-quantized",
          "quantization_status": "compressed",
          "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
              "type": "int", "num_bits": 4, "strategy": "group", "group_size": 32, "symmetric": True}}},
          "ignore": ["lm_head"]}
    quant = tmp_path / "quant"
    quant.mkdir()
    (quant / "config.json").write_text(json.dumps({**cfg, "quantization_config": qc}))
    assert main(["plan-memory", str(quant / "config.json"), "--gpu-memory", "1.5GiB", "--context", "64",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = plan_memory(DiffusionGemmaConfig.tiny(), "w4a16", 3 * GIB // 2, 64, 32)
    assert (got["scheme"], got["group_size"], got["weights_bytes"]) == ("w4a16", 32, want.weights_bytes)
    # --quantization wins over the checkpoint's
    assert main(["plan-memory", str(quant), "--quantization", "fp8", "--gpu-memory", "1GiB",
                 "--context", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scheme"] == "fp8"


@pytest.mark.parametrize("argv,message", [
    (["full_size", "--gpu-memory", "24GiB", "--context", "4096"], "full_size/config.json: not found"),
    (["tiny", "--gpu-memory", "24 gigs", "--context", "4096"], "--gpu-memory: cannot read '24 gigs'"),
    (["tiny", "--gpu-memory", "1.5", "--context", "4096"], "--gpu-memory: cannot read"),
    (["tiny", "--gpu-memory", "8GiB", "--context", "0"], "--context"),
    (["nosuch://bucket/model", "--gpu-memory", "8GiB", "--context", "64"], "cannot be read"),
    (["tiny", "--gpu-memory", "8GiB", "--context", "64", "--prompt-tokens", "65"], "--prompt-tokens"),
    (["tiny", "--quantization", "fp8", "--group-size", "64", "--gpu-memory", "8GiB", "--context", "64"],
     "--group-size: applies to w4a16 only"),
])
def test_cli_bad_input_exits_2_naming_it(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)  # relative names resolve in an empty directory
    assert main(["plan-memory", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_bad_config_and_quantization_config_exit_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    assert main(["plan-memory", str(tmp_path), "--gpu-memory", "8GiB", "--context", "64"]) == 2
    assert "config.json: invalid JSON" in capsys.readouterr().err
    cfg = {**DiffusionGemmaConfig.tiny().to_dict(), "quantization_config": {"quant_method": "gptq"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["plan-memory", str(tmp_path), "--gpu-memory", "8GiB", "--context", "64"]) == 2
    assert "quant_method" in capsys.readouterr().err
