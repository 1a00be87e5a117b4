"""A driver process for the driver-kill test: `python pipeline_driver.py SPEC.json RAY_ADDRESS PID_DIR`."""

import json
import sys

from pipeline.backend import StubBackendFactory
from pipeline.executor import run_job

if __name__ == "__main__":
    spec_path, address, pid_dir = sys.argv[1:4]
    with open(spec_path) as f:
        spec = json.load(f)
    factory = StubBackendFactory(cost_per_row_s=0.05, pid_dir=pid_dir)
    run_job(spec, backend_factory=factory, ray_address=address)
