"""Quantized weights: schemes (scheme.py), the modules that hold them (modules.py), quantizing a bf16
checkpoint on load (quantize.py) and reading compressed-tensors checkpoints (checkpoint.py)."""
