"""dgbatch's own PyTorch DiffusionGemma network: config, weights, cache, encoder/decoder passes, tokenizer.

The generation engine that runs it (denoising loop, sampler, fast engine, `generate`) is the `engine`
package beside this one.
"""

from model.cache import KVCache
from model.config import DiffusionGemmaConfig, GenerationDefaults, TextConfig
from model.tokenizer import load_tokenizer
from model.transformer import DiffusionGemma

__all__ = ["DiffusionGemma", "DiffusionGemmaConfig", "TextConfig", "GenerationDefaults", "KVCache",
           "load_tokenizer"]
