"""The training batch stream: batch `step` is a pure function of (config, step), built in-process or by a
pool of worker processes.

On CPU the model step dwarfs batch construction (tokenizing 16 chat prompts), so batches are built inline.
On a GPU the step is a few milliseconds and Python tokenization would starve it, so `data_workers` spawned
processes build batches ahead in step order. Workers return plain integer arrays (no tensors, no pickled
objects beyond builtins) and the trainer turns them back into a `Batch`.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterator

import numpy as np
import torch

from train import synthdata
from train.forward import Batch, make_batch

END_OF_TURN, PAD = 106, 0  # <turn|> ends the reply (a generation stop id); <pad> fills the rest of the canvas

_worker_tok = None


def build_batch(families: tuple[str, ...], batch_size: int, seed: int, step: int, tok, canvas: int) -> Batch:
    """The batch of training step `step` (family cycled by step; examples streamed by step)."""
    fam = families[step % len(families)]
    exs = synthdata.dataset("train", batch_size, fam, seed=seed, start=step * batch_size)
    return make_batch(tok, [e.prompt for e in exs], [e.answer for e in exs], canvas, END_OF_TURN, PAD)


def _init_worker(asset_dir: str) -> None:
    global _worker_tok
    from model import load_tokenizer

    torch.set_num_threads(1)
    _worker_tok = load_tokenizer(asset_dir)


def _work(job: tuple) -> tuple[np.ndarray, ...]:
    families, batch_size, seed, step, canvas = job
    b = build_batch(families, batch_size, seed, step, _worker_tok, canvas)
    return (b.prompt_BL.numpy(), b.prompt_valid_BL.numpy(), b.targets_BKC.numpy(), b.canvas_mask_BK.numpy())


def batches(families: tuple[str, ...], batch_size: int, seed: int, start: int, canvas: int, tok,
            asset_dir: str, workers: int = 0) -> Iterator[Batch]:
    """Endless batches for steps start, start+1, ... (CPU tensors), in order."""
    if workers <= 0:
        step = start
        while True:
            yield build_batch(families, batch_size, seed, step, tok, canvas)
            step += 1
    # spawn, not fork: the parent may already hold a CUDA context, which a forked child must not inherit.
    ctx = mp.get_context("spawn")
    ahead = 4 * workers  # bounded prefetch: Pool.imap would drain an endless job stream into its queue
    with ctx.Pool(workers, initializer=_init_worker, initargs=(asset_dir,)) as pool:
        pending: deque = deque()
        step = start
        while True:
            while len(pending) < ahead:
                pending.append(pool.apply_async(_work, ((families, batch_size, seed, step, canvas),)))
                step += 1
            yield Batch(*(torch.from_numpy(a) for a in pending.popleft().get()))
