"""Triton import shim: owns how kernel files get `triton`/`tl` and how a kernel is made runnable.

Two problems solved here, once, for every kernel file:
1. Platforms without Triton (macOS, aarch64 wheels) must still import the kernel files for their torch
   references; there `triton.jit` becomes an identity decorator and `HAS_TRITON` is False.
2. Triton reads `TRITON_INTERPRET` when `@triton.jit` *decorates* a function, so a kernel module imported
   before the variable was set holds a compiled-mode `JITFunction`. `runnable(kernel)` re-wraps the raw Python
   function as an `InterpretedFunction` at launch time when interpreter mode is on, so tests do not depend on
   import order (and the reverse: a kernel decorated under the interpreter is re-jitted for the GPU when the
   variable is off). The `@triton.jit` helpers a kernel calls by module-level name (kernels/_triton_math.py)
   get the same treatment: interpreted twins for the duration of an interpreted launch, compiled-mode
   JITFunctions again when a kernel is re-jitted for the GPU.
"""

from __future__ import annotations

import contextlib
import os
import types

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # genuinely optional: pyproject.toml installs triton only on Linux x86_64
    HAS_TRITON = False

    class _Lang(types.SimpleNamespace):
        constexpr = object

    tl = _Lang()  # type: ignore[assignment]
    triton = types.SimpleNamespace(jit=lambda fn=None, **_: fn, cdiv=lambda a, b: -(-a // b))  # type: ignore

_REWRAPPED: dict[tuple[int, bool], object] = {}


def interpret_mode() -> bool:
    """True when Triton kernels run in the CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def runnable(kernel):
    """The kernel object to launch with `kernel[grid](...)` in the current mode."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; use the torch backend")
    from triton.runtime.interpreter import InterpretedFunction

    interp = interpret_mode()
    if isinstance(kernel, InterpretedFunction) == interp and (not interp or _LANG_INTERPRETED):
        return kernel
    key = (id(kernel), interp)
    if key not in _REWRAPPED:
        if interp:
            _REWRAPPED[key] = _LangPatchedLauncher(InterpretedFunction(kernel.fn))
        else:
            # helpers decorated under the interpreter become compiled-mode JITFunctions for good
            g = kernel.fn.__globals__
            for name, val in list(g.items()):
                if isinstance(val, InterpretedFunction):
                    g[name] = triton.JITFunction(val.fn)
            _REWRAPPED[key] = triton.JITFunction(kernel.fn)
    return _REWRAPPED[key]


def _lang_modules():
    import triton.language.core
    import triton.language.math
    import triton.language.standard

    return (tl, triton.language.standard, triton.language.math, triton.language.core)


# Were triton.language's own @jit helpers (tl.zeros, tl.max, ...) decorated under the interpreter? If triton
# was imported before TRITON_INTERPRET was set, they are compiled-mode JITFunctions that an interpreted kernel
# cannot call; _LangPatchedLauncher swaps in interpreted twins for the duration of one launch.
_LANG_INTERPRETED = HAS_TRITON and interpret_mode()


class _LangPatchedLauncher:
    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction

            saved = []  # (namespace dict, name, compiled-mode value)
            for ns in [vars(m) for m in _lang_modules()] + [self.fn.fn.__globals__]:
                for name, val in list(ns.items()):
                    if isinstance(val, JITFunction):
                        saved.append((ns, name, val))
                        ns[name] = InterpretedFunction(val.fn)
            with _lang_patches_undone():
                try:
                    return self.fn[grid](*args, **kwargs)
                finally:
                    for ns, name, val in saved:
                        ns[name] = val

        return launch


@contextlib.contextmanager
def _lang_patches_undone():
    """Undo, after an interpreted launch, every patch the interpreter made to triton.language.

    The interpreter patches triton.language's builtins for a kernel's run and restores them after it, but an
    interpreted @jit function called *from* the kernel (tl.sum, tl.max and our _triton_math helpers all are)
    patches them again, through the modules its own globals name (triton.language.core for the standard
    library), and never restores that. A process that interprets a kernel and later compiles one for a GPU
    (the whole test suite on a GPU box, tests/kernels/test_sm90_compile.py here) then fails in code
    generation ("'value' object has no attribute 'dtype'") on any kernel its disk cache does not hold. This
    records the first original value of every attribute the interpreter sets during the launch and puts it
    back afterwards."""
    try:
        from triton.runtime import interpreter as interp

        scope_cls, missing = interp._LangPatchScope, interp._MISSING
    except (ImportError, AttributeError):  # another Triton: nothing known to undo
        yield
        return
    first: dict[tuple[int, str], tuple[object, str, object]] = {}
    set_attr = scope_cls.set_attr

    def recording_set_attr(scope, obj, name, value):
        first.setdefault((id(obj), name), (obj, name, getattr(obj, name, missing)))
        set_attr(scope, obj, name, value)

    scope_cls.set_attr = recording_set_attr
    try:
        yield
    finally:
        scope_cls.set_attr = set_attr
        for obj, name, original in first.values():
            if original is missing:
                if name in vars(obj):
                    delattr(obj, name)
            else:
                setattr(obj, name, original)


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
