"""Device launches per denoising step on the GPU path, counted on a CPU (a deterministic counter).

The H100 profile of a full-size forward (bench/RESULTS.md, GPU section) was dominated by small ops: 10,233
kernel launches per decoder forward at 30 layers. Launch counts do not depend on the device, so this script
counts them here: it runs the fast engine on the tiny config in bf16 under a torch dispatch mode and counts
every aten op that would launch a device kernel (views, allocations and metadata ops excluded), plus every
Triton kernel launch.

Two paths:
  torch : every kernel op on its torch reference (the CPU path).
  gpu   : every kernel op on its Triton launcher, as on a GPU. The launcher runs for real, so its own torch
          ops (allocations, casts, routing) are counted, but its kernels are only recorded, not executed (the
          interpreter would take minutes); the torch reference's values are then copied, uncounted, into the
          launcher's outputs (so layouts are the kernel's), and the engine's control flow is the real one.
Rows are split into the decoder layers (per layer) and the rest of the step (embedding, self-conditioning,
LM head, sampler, commit). Beside launches it sums the bytes read and written in vocabulary-wide tensors
([.., V]: logits, probabilities), in units of one pass over the step's fp32 logits: at V = 262,144 that
traffic is a large share of a multi-canvas step. A Triton kernel's tensor arguments count once each, so a
kernel that reads a row twice (kernels/softmax.py) is under-counted by that second read. Device -> host
reads are the engine's own counters (engine/counters.py).

    OMP_NUM_THREADS=1 .venv/bin/python bench/launches.py [--rows 2] [--steps 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels  # noqa: E402
from engine.commit_hook import ArgmaxCommit  # noqa: E402
from engine.counters import Counters  # noqa: E402
from engine.fast import Engine, Request  # noqa: E402
from engine.params import GenerationParams  # noqa: E402
from model import DiffusionGemma, DiffusionGemmaConfig  # noqa: E402

# aten ops that never launch a device kernel: views, allocations without a fill, metadata
NO_LAUNCH = frozenset("""
view _unsafe_view reshape _reshape_alias t transpose permute expand expand_as slice select unsqueeze squeeze
split split_with_sizes chunk unbind narrow alias as_strided detach lift_fresh empty empty_like new_empty
empty_strided promote_types result_type size stride sym_size sym_stride is_same_size contiguous
""".split())


class LaunchCounter(TorchDispatchMode):
    """Counts launching aten ops by name into `self.where` ("decoder" / "encoder" layers, or "rest");
    `off` pauses counting. Also sums the bytes each launch reads or writes in vocabulary-wide tensors (last
    dim == vocab, 2-D or more: logits, probabilities), the traffic that dominates a step at V = 262,144."""

    def __init__(self, vocab: int, weights: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.weight_ptrs = {w.untyped_storage().data_ptr() for w in weights}  # not logits: the tied LM head
        self.counts = {"decoder": Counter(), "encoder": Counter(), "rest": Counter()}
        self.vocab_bytes: Counter = Counter()  # by op name
        self.vocab = vocab
        self.where = "rest"
        self.off = 0

    def _vocab_bytes(self, name: str, tensors) -> None:
        n = sum(t.numel() * t.element_size() for t in tensors
                if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab
                and t.untyped_storage().data_ptr() not in self.weight_ptrs)
        if n:
            self.vocab_bytes[name] += n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        out = func(*args, **(kwargs or {}))
        if not self.off and name not in NO_LAUNCH:
            self.counts[self.where][name] += 1
            outs = out if isinstance(out, (tuple, list)) else (out,)
            self._vocab_bytes(name, [*args, *(kwargs or {}).values(), *outs])
        return out

    def record(self, kernel_name: str, args=()) -> None:
        """A Triton launch; its tensor arguments stand for what it reads and writes (a tensor passed twice,
        as a launcher does for an unused output pointer, counts once)."""
        if not self.off:
            self.counts[self.where]["triton:" + kernel_name] += 1
            seen, distinct = set(), []
            for a in args:
                if isinstance(a, torch.Tensor):
                    ident = (a.data_ptr(), a.dtype, tuple(a.shape))
                    if ident in seen:
                        continue
                    seen.add(ident)
                distinct.append(a)
            self._vocab_bytes("triton:" + kernel_name, distinct)

    @contextlib.contextmanager
    def paused(self):
        self.off += 1
        try:
            yield
        finally:
            self.off -= 1


@contextlib.contextmanager
def dry_triton(counter: LaunchCounter) -> Iterator[None]:
    """Triton launchers run, their kernels are recorded but not executed, and each op returns its torch
    reference's output (computed uncounted)."""
    class _Dry:
        def __init__(self, kernel):
            self.name = getattr(getattr(kernel, "fn", kernel), "__name__", "kernel")

        def __getitem__(self, grid):
            return lambda *a, **k: counter.record(self.name, a)

    # every kernel file launches through its module-level `runnable` (kernels/_triton_compat.py)
    mods = [m for name, m in list(sys.modules.items())
            if name.startswith("kernels.") and hasattr(m, "runnable")]
    saved_runnable = [(m, m.runnable) for m in mods]
    saved_ops = dict(kernels._OPS)

    def fill(out, ref):
        """The reference's values in the launcher's own (never written) outputs: same layouts as on a GPU."""
        if isinstance(out, torch.Tensor):
            out.copy_(ref)
        elif isinstance(out, (tuple, list)):
            for o, r in zip(out, ref):
                fill(o, r)
        return out

    def op(ref, tri):
        def run(*a, **k):
            out = tri(*a, **k)  # counted launcher ops + recorded kernels; the outputs are not computed
            with counter.paused():
                return fill(out, ref(*a, **k))
        return run

    for m in mods:
        m.runnable = _Dry
    for name, (ref, tri, mod) in saved_ops.items():
        kernels._OPS[name] = (ref, op(ref, tri), mod)
    try:
        with kernels.use_backend("triton"):
            yield
    finally:
        for m, r in saved_runnable:
            m.runnable = r
        kernels._OPS.clear()
        kernels._OPS.update(saved_ops)


class _KeepLogits(ArgmaxCommit):
    """The argmax commit under another type, so the engine keeps each step's logits for it (as for a
    structured-output row's commit hook) without changing any token."""


def count_step_launches(path: str, rows: int = 2, steps: int = 4, seed: int = 0, *, hooked: bool = False,
                        head_mode: bool = True) -> dict:
    """Run `rows` one-canvas requests of `steps` fixed steps; -> per-decoder-forward launch counts.
    hooked: every row has a commit hook that needs the logits; head_mode False: the GPU path as it was
    before the sampler's head mode (fp32 logits materialised every step)."""
    torch.manual_seed(seed)
    cfg = DiffusionGemmaConfig.tiny()
    m = DiffusionGemma(cfg).to(torch.bfloat16).eval()
    C, V = cfg.canvas_length, cfg.text.vocab_size
    params = GenerationParams(max_new_tokens=C, max_denoising_steps=steps, stability_threshold=None,
                              confidence_threshold=None)
    g = torch.Generator().manual_seed(seed)
    reqs = [Request(id=f"r{i}", input_ids=torch.randint(3, V, (20 + 3 * i,), generator=g).tolist(), seed=i,
                    params=params, commit_hook=_KeepLogits() if hooked else None) for i in range(rows)]
    counter = LaunchCounter(V, tuple(m.parameters()))

    def enter(_mod, _args, kwargs):
        counter.where = "encoder" if kwargs["encoder"] else "decoder"

    def leave(*_):
        counter.where = "rest"

    hooks = [h for b in m.layers for h in (b.register_forward_pre_hook(enter, with_kwargs=True),
                                           b.register_forward_hook(leave))]
    ctr = Counters()
    eng = Engine(m, max_batch_rows=rows, counters=ctr)
    try:
        off = ("head_sample",)
        no_head = contextlib.nullcontext() if head_mode else kernels.use_backend("torch", ops=off)
        with dry_triton(counter) if path == "gpu" else kernels.use_backend("torch"), no_head, counter:
            out = eng.generate(reqs)
    finally:
        for h in hooks:
            h.remove()
    if any(c.finish_reason == "error" for c in out):
        raise RuntimeError(f"engine error: {[c.error for c in out]}")
    L, n = cfg.text.num_hidden_layers, ctr.decoder_forwards
    dec, rest = counter.counts["decoder"], counter.counts["rest"]
    return {
        "path": path, "rows": rows, "steps": steps, "layers": L, "decoder_forwards": n,
        "encoder_forwards": ctr.encoder_forwards,
        "decoder_layer": sum(dec.values()) / (n * L),  # launches per decoder layer per decoder forward
        "rest": sum(rest.values()) / n,  # outside the layers, per decoder forward (prefill/commit included)
        "encoder_layer_total": sum(counter.counts["encoder"].values()) / L,  # per layer, whole run
        "host_syncs": ctr.host_syncs, "steady_syncs": ctr.steady_syncs,
        # traffic over [.., V] tensors per decoder forward, in passes of the fp32 logits of its rows
        "logit_passes": sum(counter.vocab_bytes.values()) / n / (rows * C * V * 4),
        "logit_passes_by_op": {k: v / n / (rows * C * V * 4) for k, v in counter.vocab_bytes.most_common()},
        "decoder_layer_ops": {k: v / (n * L) for k, v in dec.most_common()},
        "rest_ops": {k: v / n for k, v in rest.most_common()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = [count_step_launches(path, a.rows, a.steps) for path in ("torch", "gpu")]
    for r in res:
        print(f"{r['path']:>5} path: {r['decoder_layer']:6.1f} launches per decoder layer, "
              f"{r['rest']:6.1f} per decoder forward outside the layers; {r['host_syncs']} host reads "
              f"({r['steady_syncs']} inside step runs) in {r['decoder_forwards']} decoder forwards; "
              f"{r['logit_passes']:.1f} fp32 logit passes of traffic per decoder forward")
    t, gp = res
    print(f"decoder layer, gpu path / torch path: {gp['decoder_layer'] / t['decoder_layer']:.3f}")
    # rows with a commit hook that reads the logits (structured output), with and without the head mode
    for head_mode in (True, False):
        r = count_step_launches("gpu", a.rows, a.steps, hooked=True, head_mode=head_mode)
        mode = "on " if head_mode else "off"
        print(f"  gpu path, every row hooked, head mode {mode}: {r['rest']:6.1f} launches per decoder "
              f"forward outside the layers; {r['logit_passes']:.1f} fp32 logit passes of traffic")
    for key, what in (("decoder_layer_ops", "one decoder layer"), ("rest_ops", "outside the layers")):
        print(f"gpu path, {what}, launches per decoder forward by op:")
        for k, v in gp[key].items():
            print(f"  {v:6.2f} {k}")
    print("gpu path, traffic over vocabulary-wide tensors per decoder forward, in fp32 logit passes, by op:")
    for k, v in gp["logit_passes_by_op"].items():
        print(f"  {v:6.2f} {k}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
