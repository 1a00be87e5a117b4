"""Train the Sudoku DiffusionGemma model (model/assets/dgbatch-sudoku) on CPU, resumably, in one command:
`python -m train.sudoku --out runs/sudoku` (then `--export model/assets/dgbatch-sudoku`).

Owns the Sudoku recipe (`SudokuConfig`) and geometry (`sudoku_model_config`: train/loop.py's small layout with
one 164-token canvas holding the grid's canvas text (sudoku/grid.py `canvas_text`: 81 cell markers and 81
digits) + <turn|>, and a sliding window covering prompt + canvas so every cell sees every cell on every
layer), the loop and the export. Reused, not copied: the block-diffusion loss
with per-position pins (train/forward.py), initialisation, LR schedule and checkpoints (train/loop.py), the
data stream (train/sudoku_data.py) and the held-out monitor (sudoku/metrics.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from model import DiffusionGemma, DiffusionGemmaConfig, load_tokenizer
from sudoku.metrics import monitor
from train.forward import diffusion_loss
from train.loop import init_for_training, load_checkpoint, lr_at, save_checkpoint, small_model_config
from train.sudoku_data import END_OF_TURN, build_batch, build_pool, load_heldout, sample_rows

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_DIR = ROOT / "model" / "assets" / "dgbatch-small"  # same tokenizer as the small model
ASSET_DIR = ROOT / "model" / "assets" / "dgbatch-sudoku"
PROMPT_TOKENS = 186  # chat-templated prompt-only prompt (sudoku/grid.py `prompt`), every puzzle alike


@dataclass
class SudokuConfig:
    out: str = "runs/sudoku"
    # The schedule's length: `steps`, or with time_budget_s > 0 (the default) as many steps as the measured
    # pace fits in that wall time (re-estimated every 25 steps, at most `steps`; stored in the state, so a
    # resumed run keeps the horizon and its remaining budget). This CPU is shared, so a fixed step count
    # could take anywhere from 1 to 2 hours; the budget keeps the one command under 2 hours.
    steps: int = 3000
    time_budget_s: float = 6600.0
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_frac: float = 0.05
    warmup: int = 60
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eps: float = 1e-3  # corruption level t ~ U(eps, 1)
    self_cond_frac: float = 0.5  # fraction of batches trained two-pass (the sampler self-conditions)
    pin_frac: float = 0.8  # fraction of batches with their clues pinned in the canvas (the example's way)
    max_clues: int = 45  # training clue counts are uniform in [a puzzle's minimal count, max_clues]
    pool: int = 2000  # minimal puzzles generated once (seeded, cached in out/pool.jsonl)
    hidden: int = 128
    layers: int = 6
    canvas: int = 164
    sliding_window: int = 352
    seed: int = 27
    threads: int = 1
    ckpt_every_s: float = 180.0
    stop_after: int = 0  # > 0: checkpoint and return at this step (the schedule still spans `steps`)
    eval_every: int = 250
    eval_n: int = 100
    eval_steps: int = 12

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.pool < 1:
            raise ValueError("steps, batch_size and pool must be >= 1")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        for name in ("self_cond_frac", "pin_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.canvas < 163:
            raise ValueError(f"canvas must hold 81 markers, 81 digits and <turn|> (>= 163), "
                             f"got {self.canvas}")
        if self.sliding_window < PROMPT_TOKENS + self.canvas:
            raise ValueError(f"sliding_window {self.sliding_window} < prompt + canvas "
                             f"({PROMPT_TOKENS + self.canvas}): some cells would not see every cell")
        if not 17 <= self.max_clues <= 80:
            raise ValueError(f"max_clues must be in [17, 80], got {self.max_clues}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.time_budget_s < 0:
            raise ValueError(f"time_budget_s must be >= 0, got {self.time_budget_s}")


def sudoku_model_config(vocab_size: int, hidden: int, layers: int, canvas: int,
                        sliding_window: int) -> DiffusionGemmaConfig:
    """train/loop.py's small layout with one canvas per reply and a window over prompt + canvas. <turn|> is
    the first stop id: training ends every answer with it, and a pinned template (pipeline/pin_templates.py)
    pins the first stop id right after the grid."""
    cfg = small_model_config(vocab_size, hidden, layers, canvas, sliding_window=sliding_window,
                             max_new_tokens=canvas)
    stops = (END_OF_TURN,) + tuple(i for i in cfg.generation.eos_token_id if i != END_OF_TURN)
    return replace(cfg, generation=replace(cfg.generation, eos_token_id=stops))


def train(cfg: SudokuConfig, progress: bool = True) -> dict:
    """Run (or resume) training to cfg.steps; returns the final JSON state."""
    t_start = time.time()
    torch.set_num_threads(cfg.threads)
    tok = load_tokenizer(str(TOKENIZER_DIR))
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    model = DiffusionGemma(sudoku_model_config(tok.vocab_size, cfg.hidden, cfg.layers, cfg.canvas,
                                               cfg.sliding_window)).float()
    init_for_training(model)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    state = {"step": 0, "losses": [], "evals": [], "train_seconds": 0.0, "wall_seconds": 0.0,
             "horizon": cfg.steps, "config": asdict(cfg),
             "n_params": sum(p.numel() for p in model.parameters())}
    if (out / "state.json").exists():
        state = load_checkpoint(out, model, opt)
        state["config"] = asdict(cfg)
    heldout = load_heldout()
    exclude = {r["puzzle"] for r in heldout}
    pool = build_pool(cfg.pool, cfg.seed, out / "pool.jsonl")
    wall0, step0 = state["wall_seconds"], state["step"]
    last_ckpt, t_loop = time.time(), time.time()
    print(f"sudoku: {state['n_params'] / 1e6:.2f}M params, from step {step0}, horizon {state['horizon']}",
          flush=True)
    while state["step"] < (min(state["horizon"], cfg.stop_after) if cfg.stop_after > 0 else state["horizon"]):
        step = state["step"]
        sched = replace(cfg, steps=state["horizon"])
        t0 = time.time()
        rows = sample_rows(pool, cfg.seed, step, cfg.batch_size, cfg.max_clues, cfg.pin_frac, exclude)
        batch, pinned_BKC = build_batch(rows, tok, cfg.canvas)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        self_cond = torch.rand(1, generator=gen).item() < cfg.self_cond_frac
        for g in opt.param_groups:
            g["lr"] = lr_at(sched, step)
        loss = diffusion_loss(model, batch, eps=cfg.eps, self_cond=self_cond, gen=gen, pinned_BKC=pinned_BKC)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] = step + 1
        state["losses"].append((step, round(loss.item(), 5)))
        state["train_seconds"] += time.time() - t0
        state["wall_seconds"] = wall0 + time.time() - t_start
        if cfg.time_budget_s and state["step"] % 25 == 0 and state["step"] - step0 >= 20:
            # pace since this process's loop began, evals included; the horizon never drops below a step
            # already taken, nor exceeds cfg.steps
            pace = (time.time() - t_loop) / (state["step"] - step0)
            left = cfg.time_budget_s - state["wall_seconds"]
            state["horizon"] = max(state["step"] + 1, min(cfg.steps, state["step"] + int(left / pace)))
        done = state["step"] >= state["horizon"] or state["step"] == cfg.stop_after
        if progress and (state["step"] % 10 == 0 or done):
            recent = [v for _, v in state["losses"][-10:]]
            print(f"step {state['step']}/{state['horizon']} loss {sum(recent) / len(recent):.4f} "
                  f"lr {lr_at(sched, step):.2e} {state['train_seconds'] / max(1, state['step']):.2f}s/step "
                  f"wall {state['wall_seconds']:.0f}s", flush=True)
        if cfg.eval_every and (state["step"] % cfg.eval_every == 0 or done):
            model.eval()
            acc = monitor(model, tok, heldout[:cfg.eval_n], cfg.eval_steps)
            model.train()
            state["evals"].append({"step": state["step"], "steps": cfg.eval_steps, **acc})
            print(f"eval step {state['step']}: held-out at {cfg.eval_steps} steps {acc}", flush=True)
        if done or time.time() - last_ckpt > cfg.ckpt_every_s:
            save_checkpoint(out, model, opt, state)
            last_ckpt = time.time()
    return state


def export(ckpt: Path, out: Path = ASSET_DIR) -> DiffusionGemma:
    """A checkpoint as the shipped HF-layout dir: config.json, generation_config.json, fp32 model.safetensors
    (released key names, via save_pretrained) and the small model's tokenizer files."""
    c = json.loads((ckpt / "state.json").read_text())["config"]
    tok = load_tokenizer(str(TOKENIZER_DIR))
    model = DiffusionGemma(sudoku_model_config(tok.vocab_size, c["hidden"], c["layers"], c["canvas"],
                                               c["sliding_window"])).float()
    model.load_state_dict(load_file(str(ckpt / "weights.safetensors")))
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copyfile(TOKENIZER_DIR / name, Path(out) / name)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, val in asdict(SudokuConfig()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(val), default=val)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="export the checkpoint in --out as an HF-layout model dir DIR, then exit")
    args = vars(ap.parse_args(argv))
    export_dir = args.pop("export")
    progress = not args.pop("no_progress")
    if export_dir is not None:
        export(Path(args["out"]), export_dir)
        print(f"exported {args['out']} -> {export_dir}")
        return 0
    state = train(SudokuConfig(**args), progress=progress)
    print(json.dumps({"step": state["step"], "final_loss": state["losses"][-1][1],
                      "train_seconds": round(state["train_seconds"], 1), "evals": state["evals"][-2:]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
