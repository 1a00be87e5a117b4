"""What a bench/gpu.py run decides: the fastest measured form of each kernel at each shape, and the fastest
sweep variant at each size, read from its JSON (so the run's numbers turn into dispatch rules and launcher
defaults without re-reading the whole file by hand).

- canvas attention, per (D, B): the torch reference, the Triton kernel (default tiles and the best of the
  tile sweep) and PyTorch's SDPA (its own choice and each backend it accepted).
- fused MoE, per token count: the Triton kernel (default tiles and the best tile), the grouped GEMM, the
  torch reference; with the share of the measured copy bandwidth the expert weights streamed at.
- the head-mode sampler's statistics pass, per row count: each column-chunk count and the torch reference.
- sweep, per canvases per forward at each step count: ms per forward of every variant that ran, fastest first.

    python bench/decide.py RESULTS.json [MORE.json ...]
Nothing here is a measurement; it only ranks the ones in the file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _shape(s: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", s)}


def _ranked(cands: dict[str, float]) -> str:
    order = sorted(cands.items(), key=lambda kv: kv[1])
    return " < ".join(f"{name} {ms:.3f}" for name, ms in order)


def attention_tile(r: dict) -> str:
    """A sweep row's tile, naming only what the row set (None: the launcher's choice; older runs have no
    key splits or warps)."""
    parts = [f"{name}{r[key]}" for name, key in (("m", "block_m"), ("n", "block_n"), ("dv", "block_dv"),
                                                 ("split", "num_splits"), ("w", "num_warps"))
             if r.get(key) is not None]
    return " ".join(parts) or "default"


def attention(results: dict) -> list[str]:
    tiles = [r for r in results.get("attention_tiles", []) if "ms" in r]
    lines = []
    for r in results.get("kernels", []):
        if r.get("kernel") != "canvas_attention":
            continue
        sh = _shape(r["shape"])
        cands = {"torch": r["torch_ms"]}
        if "triton_ms" in r:
            cands["triton"] = r["triton_ms"]
        cands |= {k[:-3]: v for k, v in r.items() if k.startswith("sdpa") and k.endswith("_ms")}
        best = [t for t in tiles if (t["D"], t["B"]) == (sh.get("D"), sh.get("B"))]
        if best:
            t = min(best, key=lambda t: t["ms"])
            cands[f"triton[{attention_tile(t)}]"] = t["ms"]
        lines.append(f"canvas_attention D={sh.get('D')} B={sh.get('B')}: {_ranked(cands)} ms")
    return lines


def moe_tile(r: dict) -> str:
    """A MoE sweep row's tile; "down n.. k.. w.. s.." where the down GEMM ran on its own tile."""
    label = f"m{r['block_m']} n{r['block_n']} k{r['block_k']} w{r['num_warps']} s{r['num_stages']}"
    if r.get("down_tile"):
        label += " down n{} k{} w{} s{}".format(*r["down_tile"])
    return label


def moe(results: dict) -> list[str]:
    bw = results.get("calibrate", {}).get("copy_bw_GBps")
    tiles = [r for r in results.get("moe_tiles", []) if "ms" in r]
    lines = []
    for r in results.get("kernels", []):
        if r.get("kernel") != "fused_moe":
            continue
        T = _shape(r["shape"]).get("T")
        cands = {"torch": r["torch_ms"]}
        for name in ("triton", "grouped"):
            if f"{name}_ms" in r:
                cands[name] = r[f"{name}_ms"]
        best = [t for t in tiles if t["T"] == T]
        if best:
            t = min(best, key=lambda t: t["ms"])
            cands[f"triton[{moe_tile(t)}]"] = t["ms"]
        line = f"fused_moe T={T}: {_ranked(cands)} ms"
        fast = {k: v for k, v in cands.items() if k != "torch"}
        if bw and fast and r.get("weight_bytes"):
            name, ms = min(fast.items(), key=lambda kv: kv[1])
            pct = 100 * r["weight_bytes"] / (ms * 1e-3) / (bw * 1e9)
            line += f"; {name} streams the experts at {pct:.0f}% of copy bandwidth (target 80%)"
        lines.append(line)
    return lines


def sampler(results: dict) -> list[str]:
    """The head-mode statistics pass per column-chunk count, per row count."""
    lines = []
    for r in results.get("kernels", []):
        if r.get("kernel") != "head_sample":
            continue
        cands = {k[:-3]: v for k, v in r.items() if k.startswith("chunks") and k.endswith("_ms")}
        cands["torch"] = r["torch_ms"]
        differ = [k[:-len("_same_argmax")] for k, v in r.items() if k.endswith("_same_argmax") and not v]
        line = f"head_sample N={_shape(r['shape']).get('N')}: {_ranked(cands)} ms"
        if differ:
            line += f"; argmax differs from one pass with {', '.join(differ)} (a bug)"
        lines.append(line)
    return lines


def sweep(results: dict) -> list[str]:
    rows = [r for r in results.get("sweep", []) if "ms_per_forward" in r]
    lines = []
    for B, N in sorted({(r["canvases"], r["steps"]) for r in rows}):
        cands = {r["variant"]: r["ms_per_forward"] for r in rows if (r["canvases"], r["steps"]) == (B, N)}
        if len(cands) > 1:
            lines.append(f"sweep {B} canvases x {N} steps, ms per forward: {_ranked(cands)}")
    return lines


def tuned_settings(results: dict) -> dict[str, list]:
    """The fastest measured launch settings of this run, in `kernels.set_tuned`'s form ({op: [(size key,
    kwargs)]}): per token count the fastest MoE tile (its down tile too), per (head dim, canvases) the fastest
    attention tile, marked prefer_triton where it beat the torch reference at that shape, per row count the
    fastest sampler chunk count. None in a row means the launcher's choice and is left out."""
    out: dict[str, list] = {}
    moe_rows = [r for r in results.get("moe_tiles", []) if "ms" in r]
    for T in sorted({r["T"] for r in moe_rows}):
        best = min((r for r in moe_rows if r["T"] == T), key=lambda r: r["ms"])
        kw = {k: best[k] for k in ("block_m", "block_n", "block_k", "num_warps", "num_stages", "down_tile")
              if best.get(k) is not None}
        if "down_tile" in kw:
            kw["down_tile"] = tuple(kw["down_tile"])
        out.setdefault("fused_moe", []).append(((T,), kw))
    torch_ms = {}
    for r in results.get("kernels", []):
        if r.get("kernel") == "canvas_attention":
            sh = _shape(r["shape"])
            torch_ms[(sh.get("D"), sh.get("B"))] = r["torch_ms"]
    att_rows = [r for r in results.get("attention_tiles", []) if "ms" in r]
    for key in sorted({(r["D"], r["B"]) for r in att_rows}):
        best = min((r for r in att_rows if (r["D"], r["B"]) == key), key=lambda r: r["ms"])
        kw = {k: best[k] for k in ("block_m", "block_n", "block_dv", "num_splits", "num_warps")
              if best.get(k) is not None}
        if best["ms"] < torch_ms.get(key, 0.0):
            kw["prefer_triton"] = True
        out.setdefault("canvas_attention", []).append((key, kw))
    for r in results.get("kernels", []):
        if r.get("kernel") != "head_sample":
            continue
        chunks = {int(k[len("chunks"):-3]): v for k, v in r.items()
                  if k.startswith("chunks") and k.endswith("_ms") and r.get(k[:-3] + "_same_argmax", True)}
        if chunks:
            out.setdefault("head_sample", []).append(((_shape(r["shape"])["N"],),
                                                     {"chunks": min(chunks, key=chunks.get)}))
    return out


def decisions(results: dict) -> list[str]:
    return attention(results) + moe(results) + sampler(results) + sweep(results)


def main(argv: list[str] | None = None) -> int:
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        print(__doc__.strip().splitlines()[-2].strip())
        return 2
    for p in paths:
        print(f"== {p}")
        results = json.loads(Path(p).read_text())
        for line in decisions(results):
            print("  " + line)
        for op, entries in tuned_settings(results).items():  # what the "tuned" sweep row ran with
            print(f"  tuned {op}: " + "; ".join(f"{key} {kw}" for key, kw in entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
