"""Block-diffusion generation over the model/ network: the one denoising step (engine/denoise.py), the
sampler's rules (engine/sampler.py), the continuous-batching fast engine (engine/fast.py) and the public
`generate` / `generate_text` entry points (engine/generate.py)."""

from engine.fast import Engine
from engine.generate import generate, generate_text
from engine.params import GenerationParams
from engine.request import Completion, Request

__all__ = ["Engine", "Request", "Completion", "GenerationParams", "generate", "generate_text"]
