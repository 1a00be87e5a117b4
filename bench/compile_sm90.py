"""Every Triton kernel of the GPU path compiled for an H100 (sm_90) on a machine without a GPU.

No GPU is needed to learn what a kernel will be on one: Triton compiles ahead of time for any target, and its
wheel carries NVIDIA's ptxas and cuobjdump. This script makes the launchers believe a CUDA device is current
(a stand-in Triton driver that names the target and launches nothing), calls each one at the real
DiffusionGemma shapes and at every tile configuration bench/gpu.py sweeps, and reports per compiled kernel:
  - whether it compiles at all (the kernels written since the last GPU session never have);
  - registers per thread and local memory (register spills: LOCAL > 0), from the cubin;
  - shared memory per program against the H100's 227 KiB (a configuration over it cannot launch);
  - programs resident per SM (limited by registers, shared memory or warps): bytes in flight for the
    memory-bound kernels;
  - the matrix instructions (Hopper's wgmma, or the older mma.sync) and the global load widths in the PTX
    (128-bit vector loads, 16-byte cp.async, TMA bulk copies): how the weight and logit streams are read.
Launchers run their own torch ops on the CPU (allocations, routing metadata); the kernels are compiled, never
run, so outputs are garbage and nothing is compared. Speed is still only measured on a GPU (bench/gpu.py).

    .venv/bin/python bench/compile_sm90.py [--only moe,attention,...] [--no-tiles] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from compile_sm90_quant import quant_cases  # noqa: E402

# H100 SXM (sm_90) per-SM limits (CUDA occupancy calculator)
SM90 = {"regs_per_sm": 65536, "smem_per_sm": 233472, "smem_per_block": 232448, "warps_per_sm": 64,
        "blocks_per_sm": 32, "smem_reserved_per_block": 1024}


def triton_version() -> str:
    import triton

    return triton.__version__


def toolchain() -> tuple[Path, Path] | None:
    """(ptxas, cuobjdump) from Triton's NVIDIA backend, or None where this Triton has none."""
    try:
        import triton.backends.nvidia as nv
    except ImportError:
        return None
    bin_dir = Path(nv.__file__).parent / "bin"
    tools = (bin_dir / "ptxas", bin_dir / "cuobjdump")
    return tools if all(t.exists() for t in tools) else None


class _CompileOnlyDriver:
    """Triton's view of "the current device", for compiling only: a CUDA target of the given arch, device 0,
    stream 0. Nothing may launch through it (the launch path is replaced, see `compile_only`)."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_active(self) -> bool:
        return True


@dataclasses.dataclass
class Compiled:
    """One compiled specialisation of a kernel and what its binary says."""
    kernel: str
    case: str
    constexprs: dict
    num_warps: int
    num_stages: int
    shared: int
    regs: int = -1
    local: int = -1
    ptx_stats: dict = dataclasses.field(default_factory=dict)
    error: str = ""

    def occupancy(self) -> dict:
        """Programs resident per SM and what limits them (registers, shared memory, warps)."""
        if self.regs < 0:
            return {}
        per_warp = -(-self.regs * 32 // 256) * 256  # allocated in 256-register units per warp
        lim = {"regs": SM90["regs_per_sm"] // max(1, per_warp * self.num_warps),
               "smem": SM90["smem_per_sm"] // (self.shared + SM90["smem_reserved_per_block"]),
               "warps": SM90["warps_per_sm"] // self.num_warps, "blocks": SM90["blocks_per_sm"]}
        n = min(lim.values())
        return {"programs_per_sm": n, "warps_per_sm": n * self.num_warps,
                "limited_by": min(lim, key=lim.get)}

    def row(self) -> dict:
        r = dataclasses.asdict(self)
        r["fits_smem"] = self.shared <= SM90["smem_per_block"]
        r.update(self.occupancy())
        return r


def ptx_stats(ptx: str) -> dict:
    """Counts of the instructions that decide a kernel's speed, from its PTX."""
    loads = re.findall(r"ld\.global(?:\.[a-z0-9:]+)*?(?:\.v(\d))?\.(?:b|u|s|f)(\d+)", ptx)
    widths: dict[str, int] = {}
    for vec, bits in loads:
        w = str(int(vec or 1) * int(bits))
        widths[w] = widths.get(w, 0) + 1
    cp_async: dict[str, int] = {}
    for size in re.findall(r"cp\.async\.c[ag]\.shared\.global(?:\.[a-z0-9:]+)*\s+\[[^\]]+\],\s*\[[^\]]+\],\s*"
                           r"(0x[0-9a-fA-F]+|\d+)", ptx):
        size = str(int(size, 0))
        cp_async[size] = cp_async.get(size, 0) + 1
    return {"wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
            "mma_sync": len(re.findall(r"\bmma\.sync", ptx)), "ld_global_bits": widths,
            "cp_async_bytes": cp_async,
            "tma": len(re.findall(r"cp\.async\.bulk\.tensor", ptx))}


def resource_usage(cubin: bytes, cuobjdump: Path) -> tuple[int, int]:
    """(registers per thread, local memory bytes per thread) of the one function in a cubin."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    m = re.search(r"REG:(\d+)\s+STACK:\d+\s+SHARED:\d+\s+LOCAL:(\d+)", out)
    if not m:
        raise RuntimeError(f"cuobjdump -res-usage gave no resource line: {out[-300:]}")
    return int(m.group(1)), int(m.group(2))


@contextlib.contextmanager
def compile_only(arch: int = 90) -> Iterator[list[Compiled]]:
    """Inside: Triton compiles for CUDA sm_`arch` and every kernel launch through kernels/ (each kernel file's
    module-level `runnable`) compiles its specialisation instead of running; yields the list that collects a
    `Compiled` per kernel and case (the caller's label, set in `compile_only.case`).
    Each kernel is compiled through a fresh JITFunction of its source, so no launcher's own compile caches see
    the stand-in target (a GPU process that runs this keeps launching for its real card afterwards)."""
    import os

    import triton
    from triton.runtime import driver

    from kernels import _triton_compat

    tools = toolchain()
    if tools is None:
        raise RuntimeError("this Triton has no NVIDIA backend tools (ptxas, cuobjdump)")
    if _triton_compat._LANG_INTERPRETED:
        raise RuntimeError("triton was imported with TRITON_INTERPRET=1, so its language helpers are "
                           "interpreted and cannot compile; run this in a process without it")
    _, cuobjdump = tools
    found: list[Compiled] = []
    seen: set[tuple] = set()
    fresh: dict[int, object] = {}
    saved_env = os.environ.get("TRITON_INTERPRET")

    class _Compile:
        def __init__(self, kernel):
            # the shared `runnable` gives the compiled-mode kernel (it also swaps any interpreted helper the
            # kernel calls back to compiled mode); a fresh copy of it keeps its caches untouched
            compiled = _triton_compat.runnable(kernel)
            self.kernel = fresh.setdefault(id(compiled), triton.JITFunction(compiled.fn))

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                jit = self.kernel
                name = jit.fn.__name__
                k = jit.warmup(*args, grid=grid, **kwargs)
                key = (compile_only.case, name, k.hash)  # each case lists its kernels once
                if key in seen:
                    return
                seen.add(key)
                md = k.metadata
                c = Compiled(kernel=name, case=compile_only.case, num_warps=md.num_warps,
                             num_stages=md.num_stages, shared=md.shared,
                             constexprs={p.name: kwargs[p.name] for p in jit.params
                                         if p.is_constexpr and p.name in kwargs})
                c.regs, c.local = resource_usage(k.asm["cubin"], cuobjdump)
                c.ptx_stats = ptx_stats(k.asm["ptx"])
                found.append(c)
            return launch

    mods = [importlib.import_module(f"kernels.{m}") for m in KERNEL_MODULES]
    saved_runnable = [(m, m.runnable) for m in mods]
    saved_driver = driver._active
    os.environ["TRITON_INTERPRET"] = "0"  # compiled mode throughout
    driver.set_active(_CompileOnlyDriver(arch))
    for m in mods:
        m.runnable = _Compile
    try:
        yield found
    finally:
        for m, r in saved_runnable:
            m.runnable = r
        driver._active = saved_driver
        if saved_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved_env


compile_only.case = ""
# the kernel files that launch kernels (kernels/quant_moe.py launches fused_moe's)
KERNEL_MODULES = ("canvas_attention", "fused_moe", "gelu_mul", "logit_epilogue", "moe_align", "norm_rope",
                  "quant_linear", "rms_norm", "router", "sampler", "softmax", "stream_keys")


# ---- the cases: each dispatched op's Triton launcher at DiffusionGemma's real shapes ----------------------
def real_cases(cfg, tiles: bool, canvases: tuple[int, ...] = (1, 8)) -> dict[str, list[tuple[str, Callable]]]:
    """Group -> [(case label, call)], every call a Triton launcher on CPU tensors of the real shapes, at 1
    and 8 canvases per forward (`canvases`); `tiles` adds every configuration bench/gpu.py sweeps."""
    from functools import partial as P

    from decide import attention_tile
    from gpu_kernels import ATTN_TILES, MOE_DOWN_TILES, MOE_TILES

    from kernels.canvas_attention import canvas_attention_triton
    from kernels.fused_moe import _combine, fused_moe_triton
    from kernels.gelu_mul import gelu_mul_triton
    from kernels.logit_epilogue import logit_epilogue_triton
    from kernels.norm_rope import norm_rope_triton
    from kernels.rms_norm import rms_norm_pair_triton, rms_norm_triton
    from kernels.router import route_triton
    from kernels.sampler import fused_sample_triton, head_sample_triton
    from kernels.softmax import softmax_triton
    from kernels.stream_keys import derive_keys_triton

    t, C = cfg.text, cfg.canvas_length
    H, E, k, I, V = t.hidden_size, t.num_experts, t.top_k_experts, t.moe_intermediate_size, t.vocab_size  # noqa: E741
    Hq, S, cap = t.num_attention_heads, 1024, t.final_logit_softcapping
    bf = torch.bfloat16
    e = P(torch.empty, dtype=bf)  # contents never read: the kernels only compile
    g = torch.Generator().manual_seed(0)
    cases: dict[str, list] = {name: [] for name in ("moe", "attention", "sampler", "small")}
    gu, dn = e(E, 2 * I, H), e(E, H, I)
    wH = e(H)
    for canv in canvases:
        T = canv * C
        moe, attn, smp, small = (cases[name] for name in ("moe", "attention", "sampler", "small"))
        x = e(T, H)
        idx = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])
        w = torch.rand(T, k, generator=g)
        moe.append((f"fused_moe T={T} default tiles", P(fused_moe_triton, x, idx, w, gu, dn)))
        for bm, bn, bk, nw, ns in MOE_TILES if tiles else ():
            moe.append((f"fused_moe T={T} tile bm={bm} bn={bn} bk={bk} w={nw} s={ns}",
                        P(fused_moe_triton, x, idx, w, gu, dn, block_m=bm, block_n=bn, block_k=bk,
                          num_warps=nw, num_stages=ns)))
        big_m = max(t[0] or 0 for t in MOE_TILES)  # the down tiles meet every block_m; the largest needs most
        for down in MOE_DOWN_TILES if tiles else ():
            label = "fused_moe T={} tile bm={} down tile bn={} bk={} w={} s={}".format(T, big_m, *down)
            moe.append((label, P(fused_moe_triton, x, idx, w, gu, dn, block_m=big_m, down_tile=down)))
        gu_AF = e(T * k, 2 * I)  # the grouped form's Triton parts: gelu_mul on the halves, the row combine
        moe.append((f"grouped gelu_mul T={T}", P(gelu_mul_triton, gu_AF[:, :I], gu_AF[:, I:])))
        moe.append((f"grouped combine T={T}", P(_combine, e(T * k, H), w, e(T, H), torch.randperm(T * k))))

        for i in sorted({t.layer_types.index(lt) for lt in set(t.layer_types)}):
            K, D = t.layer_kv_heads(i), t.layer_head_dim(i)
            args = (e(canv, Hq, C, D), e(canv + 1, K, S, D), e(canv + 1, K, S, D),
                    torch.ones(canv, S, dtype=torch.bool), e(canv, K, C, D), e(canv, K, C, D))
            for tile in ATTN_TILES.get(D, [(None,) * 5]) if tiles else [(None,) * 5]:
                bm, bn, bdv, splits, warps = tile
                named = dict(zip(("block_m", "block_n", "block_dv", "num_splits", "num_warps"), tile))
                label = "default tiles" if tile == (None,) * 5 else f"tile {attention_tile(named)}"
                attn.append((f"canvas_attention B={canv} D={D} {label}",
                             P(canvas_attention_triton, *args, ctx_rows_B=torch.arange(canv), block_m=bm,
                               block_n=bn, block_dv=bdv, num_splits=splits or 1, num_warps=warps)))

        raw = e(T, V)  # the LM head's raw bf16 output, one row per canvas position
        temp = torch.rand(canv, generator=g) + 0.5
        keys = torch.zeros(T, dtype=torch.int64)
        need = torch.rand(T, generator=g) < 0.03
        smp += [
            (f"head_sample N={T} statistics", P(head_sample_triton, raw, cap, temp, keys)),
            (f"head_sample N={T} sample_only", P(head_sample_triton, raw, cap, temp, keys, need,
                                                 sample_only=True)),
            (f"head_sample N={T} statistics in 8 column chunks", P(head_sample_triton, raw, cap, temp, keys,
                                                                   chunks=8)),
            (f"fused_sample N={T} fp32", P(fused_sample_triton, torch.empty(T, V), torch.ones(T), keys,
                                           need)),
            (f"softmax head mode N={T}", P(softmax_triton, raw.view(canv, C, V), bf, cap=cap,
                                           temperature_R=temp)),
            (f"logit_epilogue N={T}", P(logit_epilogue_triton, raw.view(canv, C, V), cap, temp, bf)),
            (f"derive_keys B={canv}", P(derive_keys_triton, torch.arange(canv), 0, 3, C)),
        ]
        xh = e(T, H)
        gate = e(T, t.intermediate_size)
        small += [
            (f"rms_norm T={T}", P(rms_norm_triton, xh, wH, 1e-6)),
            (f"rms_norm post-attention (residual) T={T}", P(rms_norm_triton, xh, wH, 1e-6, residual=xh)),
            (f"rms_norm block tail (add, residual, scale, norm_x, norm_add) T={T}",
             P(rms_norm_triton, xh, wH, 1e-6, add=xh, residual=xh, scale=torch.ones(1), norm_x=wH,
               norm_add=wH)),
            (f"rms_norm_pair T={T}", P(rms_norm_pair_triton, xh, wH, wH, 1e-6)),
            (f"route T={T}", P(route_triton, xh, wH, e(E, H), torch.ones(E, dtype=bf), k, 1e-6)),
            (f"gelu_mul dense T={T}", P(gelu_mul_triton, gate, gate)),
        ]
        for D in sorted({t.layer_head_dim(i) for i in range(t.num_hidden_layers)}):
            small.append((f"norm_rope T={T} D={D}", P(norm_rope_triton, e(canv, C, Hq, D), e(D), 1e-6,
                                                      e(canv, C, D), e(canv, C, D))))
            small.append((f"v norm T={T} D={D}", P(rms_norm_triton, e(T * 8, D), None, 1e-6)))
    cases["quant"] = quant_cases(cfg, canvases)  # bench/compile_sm90_quant.py
    return cases


def run_cases(cases: dict, only: set[str] | None = None, arch: int = 90) -> list[dict]:
    """Compile every case; a case that fails to compile becomes a row with its error."""
    rows = []
    with compile_only(arch) as found:
        for group, items in cases.items():
            if only and group not in only:
                continue
            for label, call in items:
                compile_only.case = f"{group}: {label}"
                n = len(found)
                t0 = time.perf_counter()
                try:
                    call()
                except Exception as e:  # noqa: BLE001 - a kernel that does not compile is the finding
                    rows.append({"case": compile_only.case, "error": f"{type(e).__name__}: {e}"[:600]})
                    continue
                for c in found[n:]:
                    rows.append(c.row() | {"compile_s": round(time.perf_counter() - t0, 1)})
    return rows


def summary_line(r: dict) -> str:
    if r.get("error"):
        return f"  COMPILE ERROR  {r['case']}: {r['error'][:200]}"
    ps = r["ptx_stats"]
    mma = (f"wgmma {ps['wgmma']}" if ps["wgmma"] else
           f"mma.sync {ps['mma_sync']}" if ps["mma_sync"] else "no mma")
    loads = ",".join(f"{b}b x{n}" for b, n in sorted(ps["ld_global_bits"].items(), key=lambda x: -int(x[0])))
    cpa = ",".join(f"{b}B x{n}" for b, n in sorted(ps["cp_async_bytes"].items(), key=lambda x: -int(x[0])))
    flags = ("" if r["fits_smem"] else "  OVER SHARED MEMORY") + (
        f"  SPILLS {r['local']} B" if r["local"] else "")
    return (f"  {r['kernel']:<24} w={r['num_warps']} s={r['num_stages']} regs={r['regs']:>3} "
            f"smem={r['shared'] / 1024:6.1f}K progs/SM={r.get('programs_per_sm', '?')} "
            f"({r.get('limited_by', '?')}) {mma} ld[{loads}] cp.async[{cpa}] tma {ps['tma']}{flags}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help="comma-separated groups: moe, attention, sampler, small, quant")
    p.add_argument("--no-tiles", action="store_true", help="skip the tile configurations bench/gpu.py sweeps")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if toolchain() is None:
        print("this Triton has no NVIDIA backend tools (ptxas, cuobjdump): nothing to compile")
        return 1
    torch.set_num_threads(1)
    from model import DiffusionGemmaConfig

    only = {s for s in a.only.split(",") if s} or None
    t0 = time.perf_counter()
    rows = run_cases(real_cases(DiffusionGemmaConfig.full_size(), not a.no_tiles), only, a.arch)
    last = None
    for r in rows:
        if r["case"] != last:
            print(r["case"])
            last = r["case"]
        print(summary_line(r))
    bad = [r for r in rows if r.get("error")]
    over = [r for r in rows if not r.get("error") and not r["fits_smem"]]
    spill = [r for r in rows if not r.get("error") and r["local"]]
    print(f"{len(rows)} compiled kernels in {time.perf_counter() - t0:.0f} s: {len(bad)} compile errors, "
          f"{len(over)} over the sm_{a.arch} shared memory, {len(spill)} with register spills")
    if a.json:
        Path(a.json).write_text(json.dumps({"arch": a.arch, "triton": triton_version(), "rows": rows}))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
