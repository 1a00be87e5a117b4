"""Train the small DiffusionGemma-architecture model on the synthetic task data, resumably, on CPU (the
default) or a CUDA GPU (`--device cuda --data-workers N`, with `--time-budget-s` to fit a lent machine).

Owns the training config (`TrainConfig`), the small model geometry (`small_model_config`), the loop
(block-diffusion loss from train/forward.py, two-pass self-conditioning on a fraction of the batches,
AdamW with warmup + cosine), checkpoints (safetensors weights + optimizer moments + a JSON state; never
pickle), a tqdm progress bar, a loss-curve PNG and periodic held-out accuracy (train/evaluate.py's monitor).
Data is a pure function of the step (train/synthdata.py) and noise is seeded by the step, so a resumed run
continues exactly. Run: `python -m train.loop --out runs/small --threads 2` (the defaults are the shipped
model's recipe); continue from another run's weights with `--init-from DIR` (fresh optimizer and schedule).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model import DiffusionGemma, DiffusionGemmaConfig, load_tokenizer
from model.config import FULL, PLACEHOLDER_VISION_CONFIG, SLIDING
from train import synthdata
from train.data import batches, build_batch
from train.forward import diffusion_loss
from train.tokenizer import SPECIAL_IDS

ASSET_DIR = Path(__file__).resolve().parents[1] / "model" / "assets" / "dgbatch-small"


def small_model_config(vocab_size: int = 3072, hidden: int = 128, layers: int = 4, canvas: int = 32,
                       experts: int = 8, top_k: int = 2, sliding_window: int = 64,
                       max_new_tokens: int = 0) -> DiffusionGemmaConfig:
    """The shipped geometry: Gemma-4 layout scaled down (sliding + full layers, wider fewer-KV full heads,
    8 experts top-2 beside the dense MLP, proportional RoPE on full layers). max_new_tokens 0: two canvases
    (the small model's default); the Sudoku model (train/sudoku.py) widens the window and uses one canvas."""
    types = [SLIDING if i % 2 == 0 else FULL for i in range(layers)]
    # special ids are the shipped tokenizer's (train/tokenizer.py); every reader takes them from this config
    pad, eos, bos = SPECIAL_IDS["<pad>"], SPECIAL_IDS["<eos>"], SPECIAL_IDS["<bos>"]
    end_of_turn, tool_response = SPECIAL_IDS["<turn|>"], SPECIAL_IDS["<|tool_response>"]
    text = {
        "model_type": "diffusion_gemma_text", "vocab_size": vocab_size, "hidden_size": hidden,
        "intermediate_size": 2 * hidden, "moe_intermediate_size": hidden, "num_experts": experts,
        "top_k_experts": top_k, "num_hidden_layers": layers, "layer_types": types, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": hidden // 4,
        "per_layer_config": {str(i): {"head_dim": hidden // 2, "num_key_value_heads": 1}
                             for i, t in enumerate(types) if t == FULL},
        "sliding_window": sliding_window, "max_position_embeddings": 4096,
        "pad_token_id": pad, "eos_token_id": eos, "bos_token_id": bos,
    }
    gen = {"max_new_tokens": max_new_tokens or 2 * canvas, "max_denoising_steps": 48, "t_max": 0.8,
           "t_min": 0.4,
           "sampler_config": {"entropy_bound": 0.1}, "stability_threshold": 1, "confidence_threshold": 0.005,
           "eos_token_id": [eos, end_of_turn, tool_response], "pad_token_id": pad}
    return DiffusionGemmaConfig.from_dict(
        {"model_type": "diffusion_gemma", "text_config": text, "canvas_length": canvas,
         "eos_token_id": [eos, end_of_turn], "vision_config": dict(PLACEHOLDER_VISION_CONFIG)},
        generation=gen)


@dataclass
class TrainConfig:
    # The defaults are the shipped model's recipe (model/assets/dgbatch-small/README.md): one run that meets
    # the quality targets in about 80 min on this 2-core box with `--threads 2`.
    out: str = "runs/small"
    steps: int = 5600
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_frac: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eps: float = 1e-3  # corruption level t ~ U(eps, 1)
    self_cond_frac: float = 0.5  # fraction of batches trained two-pass
    # family schedule, cycled by step (extraction is the harder family: 5 of 6 batches; labeling is at 100%
    # held-out by step 3,000 on 1 of 6)
    families: tuple[str, ...] = ("labeling",) + ("extraction",) * 5
    hidden: int = 128
    layers: int = 4
    canvas: int = 32
    seed: int = 21
    ckpt_every_s: float = 180.0
    stop_after: int = 0  # > 0: checkpoint and return at this step (the schedule still spans `steps`)
    eval_every: int = 500
    eval_n: int = 48
    eval_steps: int = 12
    # Accelerator runs: "cuda" trains there (batches built by `data_workers` processes so the GPU is not
    # starved by Python tokenization); time_budget_s > 0 fixes `steps` after a short timing window so the
    # cosine ends when the budget does; init_from starts from a checkpoint's weights (fresh optimizer).
    device: str = "cpu"
    data_workers: int = 0
    threads: int = 1  # torch CPU threads; 1 keeps timings steady on a shared machine
    time_budget_s: float = 0.0
    init_from: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if not 0.0 <= self.self_cond_frac <= 1.0:
            raise ValueError(f"self_cond_frac must be in [0, 1], got {self.self_cond_frac}")
        bad = [f for f in self.families if f not in synthdata.FAMILIES]
        if bad:
            raise ValueError(f"families: unknown {bad}; expected {synthdata.FAMILIES}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")
        if self.data_workers < 0 or self.time_budget_s < 0:
            raise ValueError("data_workers and time_budget_s must be >= 0")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.init_from and not (Path(self.init_from) / "weights.safetensors").exists():
            raise ValueError(f"init_from: no weights.safetensors in {self.init_from}")


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


@torch.no_grad()
def init_for_training(model: DiffusionGemma, post_scale: float = 0.25) -> None:
    """From-scratch initialisation for a SMALL model (the architecture is unchanged; all are free parameters).

    Two reference defaults only work at width: (1) embeddings N(0, 0.02) times sqrt(H) have RMS 0.02*sqrt(H)
    (about 1 at H=2816, 0.23 at H=128), while every sandwich-normed sub-layer adds a unit-RMS output, so a
    small model's encoder stream starts swamped by noise; (2) attention has scaling 1.0 with unit q/k norm
    scales, i.e. logits of std sqrt(D) (saturated softmax). Two 500-step runs with those defaults learned
    the output format but never read the prompt (held-out labels at chance). So: embeddings at RMS 1 after
    scaling, post-attention / post-feed-forward norm scales at `post_scale`, q/k norm scales at D^-1/4.
    """
    H = model.text.hidden_size
    model.embed_tokens.weight.normal_(0.0, H ** -0.5)
    for layer in model.layers:
        attn = layer.self_attn
        attn.q_norm.weight.fill_(attn.head_dim ** -0.25)
        attn.k_norm.weight.fill_(attn.head_dim ** -0.25)
        layer.post_attention_layernorm.weight.fill_(post_scale)
        layer.post_feedforward_layernorm.weight.fill_(post_scale)


def train_batch(cfg: TrainConfig, step: int, tok, canvas: int):
    return build_batch(cfg.families, cfg.batch_size, cfg.seed, step, tok, canvas)


# --- checkpoints --------------------------------------------------------------------------------------
def save_checkpoint(out: Path, model: DiffusionGemma, opt: torch.optim.Optimizer, state: dict) -> None:
    """weights.safetensors + optim.safetensors + state.json, each written to a temp name then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in model.named_parameters()}
    moments = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                moments[f"exp_avg.{names[id(p)]}"] = st["exp_avg"].cpu().contiguous()
                moments[f"exp_avg_sq.{names[id(p)]}"] = st["exp_avg_sq"].cpu().contiguous()
                moments[f"step.{names[id(p)]}"] = torch.as_tensor(
                    st["step"], dtype=torch.float32).cpu().reshape(1)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, tensors in (("weights", weights), ("optim", moments)):
        save_file(tensors, str(out / f"{name}.safetensors.tmp"))
        (out / f"{name}.safetensors.tmp").replace(out / f"{name}.safetensors")
    (out / "state.json.tmp").write_text(json.dumps(state))
    (out / "state.json.tmp").replace(out / "state.json")


def load_checkpoint(out: Path, model: DiffusionGemma, opt: torch.optim.Optimizer | None) -> dict:
    dev = next(model.parameters()).device
    model.load_state_dict(load_file(str(out / "weights.safetensors"), device=str(dev)))
    if opt is not None and (out / "optim.safetensors").exists():
        moments = load_file(str(out / "optim.safetensors"), device=str(dev))
        for n, p in model.named_parameters():
            if f"exp_avg.{n}" in moments:
                opt.state[p] = {"step": moments[f"step.{n}"].cpu().reshape(()),  # AdamW keeps steps on CPU
                                "exp_avg": moments[f"exp_avg.{n}"], "exp_avg_sq": moments[f"exp_avg_sq.{n}"]}
    return json.loads((out / "state.json").read_text())


def plot_curve(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps, losses = zip(*state["losses"]) if state["losses"] else ((), ())
    ax.plot(steps, losses, lw=0.6, alpha=0.4, label="batch loss")
    if len(losses) > 20:
        k = 20
        sm = [sum(losses[max(0, i - k):i + 1]) / len(losses[max(0, i - k):i + 1]) for i in range(len(losses))]
        ax.plot(steps, sm, lw=1.5, label="moving mean (21)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("canvas cross-entropy")
    ax2 = ax.twinx()
    for fam, style in (("labeling", "g.-"), ("extraction", "r.-")):
        pts = [(e["step"], e[fam]) for e in state.get("evals", []) if fam in e]
        if pts:
            ax2.plot(*zip(*pts), style, label=f"held-out exact ({fam})")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("held-out exact match (monitor)")
    fig.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export(ckpt: Path, out: Path = ASSET_DIR) -> DiffusionGemma:
    """Write a training checkpoint as the shipped HF-layout model dir (config.json, generation_config.json,
    model.safetensors in fp32 under the released key names) plus the tokenizer files of the asset dir."""
    state = json.loads((ckpt / "state.json").read_text())
    c = state["config"]
    tok = load_tokenizer(str(ASSET_DIR))
    model = DiffusionGemma(small_model_config(tok.vocab_size, c["hidden"], c["layers"], c["canvas"])).float()
    model.load_state_dict(load_file(str(ckpt / "weights.safetensors")))
    model.save_pretrained(str(out))
    if Path(out).resolve() != ASSET_DIR.resolve():
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copyfile(ASSET_DIR / name, Path(out) / name)
    return model


# --- loop ---------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, tok=None, progress: bool = True) -> dict:
    """Run (or resume) training to cfg.steps; returns the final JSON state."""
    torch.set_num_threads(cfg.threads)
    tok = tok or load_tokenizer(str(ASSET_DIR))
    out = Path(cfg.out)
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # a 128-wide model: launch-bound, tf32 costs no accuracy
    mcfg = small_model_config(tok.vocab_size, cfg.hidden, cfg.layers, cfg.canvas)
    torch.manual_seed(cfg.seed)
    model = DiffusionGemma(mcfg).float()
    init_for_training(model)
    if cfg.init_from:
        model.load_state_dict(load_file(str(Path(cfg.init_from) / "weights.safetensors")))
    model = model.to(dev).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    state = {"step": 0, "losses": [], "evals": [], "train_seconds": 0.0, "config": asdict(cfg),
             "n_params": sum(p.numel() for p in model.parameters())}
    if (out / "state.json").exists():
        state = load_checkpoint(out, model, opt)
        state["config"] = asdict(cfg)
    last_ckpt = time.time()
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, dynamic_ncols=True)
    stop = cfg.stop_after if cfg.stop_after > 0 else cfg.steps
    stream = batches(cfg.families, cfg.batch_size, cfg.seed, state["step"], mcfg.canvas_length, tok,
                     str(ASSET_DIR), cfg.data_workers)
    pending: list[tuple[int, torch.Tensor]] = []  # losses read back in groups: one host sync per group
    budget_t0, budget_step0, window_t0 = time.time(), state["step"], 0.0
    with torch.device(dev):  # the loss code's aranges / masks / noise are created on the training device
        while state["step"] < min(cfg.steps, stop):
            step = state["step"]
            t0 = time.time()
            gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step)
            batch = next(stream)
            batch = type(batch)(*(t.to(dev, non_blocking=True) for t in vars(batch).values()))
            self_cond = torch.rand(1, generator=gen, device="cpu").item() < cfg.self_cond_frac
            noise_gen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(
                cfg.seed * 1_000_003 + step)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            loss = diffusion_loss(model, batch, eps=cfg.eps, self_cond=self_cond, gen=noise_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            state["step"] = step + 1
            pending.append((step, loss.detach()))
            done = state["step"] >= min(cfg.steps, stop)
            if dev.type == "cpu" or len(pending) >= 50 or done:
                state["losses"] += [(s_, round(v.item(), 5)) for s_, v in pending]
                bar.set_postfix(loss=f"{state['losses'][-1][1]:.4f}", lr=f"{lr_at(cfg, step):.2e}")
                pending = []
            state["train_seconds"] += time.time() - t0
            bar.update(1)
            if cfg.time_budget_s and state["step"] == budget_step0 + 20:
                window_t0 = time.time()  # after start-up (worker spawn, CUDA init, allocator warm-up)
            if cfg.time_budget_s and state["step"] == budget_step0 + 80:
                # fix the schedule's length once the step time is known, so the cosine ends with the budget
                per_step = (time.time() - window_t0) / 60
                cfg.steps = state["step"] + max(1, int((cfg.time_budget_s - (time.time() - budget_t0))
                                                       / per_step))
                stop = cfg.stop_after if cfg.stop_after > 0 else cfg.steps
                state["config"] = asdict(cfg)
                bar.total = cfg.steps
                bar.write(f"time budget {cfg.time_budget_s:.0f}s at {1e3 * per_step:.1f} ms/step: "
                          f"{cfg.steps} steps")
            if cfg.eval_every and dev.type == "cpu" and (state["step"] % cfg.eval_every == 0 or done):
                from train.evaluate import monitor_accuracy

                model.eval()
                acc = monitor_accuracy(model, tok, n=cfg.eval_n, steps=cfg.eval_steps)
                model.train()
                state["evals"].append({"step": state["step"], **acc})
                bar.write(f"step {state['step']}: held-out exact {acc}")
            if done or time.time() - last_ckpt > cfg.ckpt_every_s:
                save_checkpoint(out, model, opt, state)
                plot_curve(state, out / "loss_curve.png")
                last_ckpt = time.time()
    stream.close()
    bar.close()
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    for name, val in asdict(defaults).items():
        if isinstance(val, (int, float, str)) and not isinstance(val, bool):
            ap.add_argument(f"--{name.replace('_', '-')}", type=type(val), default=val)
    ap.add_argument("--families", type=lambda s: tuple(s.split(",")), default=defaults.families,
                    help="family schedule cycled by step, comma-separated (default: %(default)s)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="export the checkpoint in --out as an HF-layout model dir DIR, then exit")
    args = vars(ap.parse_args(argv))
    export_dir = args.pop("export")
    if export_dir is not None:
        export(Path(args["out"]), export_dir)
        print(f"exported {args['out']} -> {export_dir}")
        return 0
    progress = not args.pop("no_progress")
    cfg = TrainConfig(**args)
    state = train(cfg, progress=progress)
    print(json.dumps({"step": state["step"], "final_loss": state["losses"][-1][1],
                      "train_seconds": round(state["train_seconds"], 1), "evals": state["evals"][-1:]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
