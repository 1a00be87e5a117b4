"""Make the repository root importable first, so `import model` is the package, not this test directory.

(Without `pythonpath = ["."]` in the pytest config, a bare `pytest` only sees tests/ on sys.path, where the
directory tests/model would be picked up as a namespace package named `model`.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
