"""A driver process for the driver-kill tests and bench/chaos.py (stub backend):

    python pipeline_driver.py SPEC.json RAY_ADDRESS PID_DIR [FACTORY_JSON]

FACTORY_JSON is a JSON object of `StubBackendFactory` fields (default: 0.05 s per row); PID_DIR is always
the factory's `pid_dir`, where each replica records its pid for the test to kill.
"""

import json
import sys

from pipeline.backend import StubBackendFactory
from pipeline.executor import run_job

if __name__ == "__main__":
    spec_path, address, pid_dir = sys.argv[1:4]
    with open(spec_path) as f:
        spec = json.load(f)
    fields = {"cost_per_row_s": 0.05, **(json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})}
    factory = StubBackendFactory(**{**fields, "pid_dir": pid_dir})
    run_job(spec, backend_factory=factory, ray_address=address)
