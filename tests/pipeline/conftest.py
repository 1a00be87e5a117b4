"""Pipeline test fixtures: dummy AWS credentials, a moto S3 server on loopback, one local Ray per session.

Ray is started once (logical CPUs plus a `fake_gpu` custom resource standing in for GPUs) and shared by
every module; the node-loss module shuts it down for its own multi-node cluster, and the next test that
asks for `ray_local` starts it again. Only what these fixtures start is stopped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The repo root first: pytest puts tests/ on sys.path, where tests/pipeline/ would otherwise shadow the
# `pipeline` package as a namespace package when pytest is not started with `python -m`.
sys.path.insert(0, str(Path(__file__).parent))  # pipeline_helpers.py
sys.path.insert(0, str(Path(__file__).parents[2]))

_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def aws_env():
    """Dummy credentials for the moto server, set before Ray starts so replicas inherit them."""
    old = {k: os.environ.get(k) for k in _AWS}
    os.environ.update(_AWS)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def s3_endpoint(aws_env):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, request):
    """A fresh bucket per test: s3://<name>."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:50]
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


_RAY_STARTED = {"by_us": False}


@pytest.fixture
def ray_local(aws_env):
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, resources={"fake_gpu": 2}, include_dashboard=False, log_to_driver=False)
        _RAY_STARTED["by_us"] = True
    yield ray


@pytest.fixture(scope="session", autouse=True)
def _stop_ray_at_end():
    yield
    if _RAY_STARTED["by_us"]:
        import ray

        if ray.is_initialized():
            ray.shutdown()
