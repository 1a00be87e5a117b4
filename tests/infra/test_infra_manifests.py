"""The deployment files parse and say what they must: cluster launcher YAML against Ray's own schema,
the RayJob/ConfigMap structure (entrypoint, config mount, Secret by name, no literal credentials), the job
spec inside the ConfigMap against the real JobSpec, and the Dockerfiles at parse level."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.spec import JobSpec

INFRA = Path(__file__).resolve().parents[2] / "infra"
_SECRET_NAME = re.compile(r"secret|password|token|access_key|credential", re.I)
# Shapes of real credentials: AWS key ids, 40-char AWS secrets, PEM blocks, bearer tokens.
_SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])|"
                           r"-----BEGIN [A-Z ]*PRIVATE KEY|Bearer [A-Za-z0-9._-]{20,}")


def test_the_credential_detector_detects():
    # The leak checks below are only as good as this pattern: it must catch the usual shapes.
    for leak in ("AKIAIOSFODNN7EXAMPLE", "key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                 "-----BEGIN RSA PRIVATE KEY-----"):
        assert _SECRET_VALUE.search(leak), leak
    assert not _SECRET_VALUE.search("s3://my-bucket/generations/2025-06-run1")


def _load(name: str) -> Any:
    return yaml.safe_load((INFRA / name).read_text())


def _walk(obj: Any, path: str = ""):
    """(path, value) for every scalar in a YAML tree."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


# A structural schema for the parts of KubeRay's RayJob (ray.io/v1) this project relies on.
RAYJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "properties": {
                "entrypoint": {"type": "string"},
                "runtimeEnvYAML": {"type": "string"},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "backoffLimit": {"type": "integer", "minimum": 0},
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec", "workerGroupSpecs"],
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "headGroupSpec": {"type": "object", "required": ["rayStartParams", "template"]},
                        "workerGroupSpecs": {"type": "array", "minItems": 1, "items": {
                            "type": "object",
                            "required": ["groupName", "replicas", "rayStartParams", "template"],
                            "properties": {"replicas": {"type": "integer", "minimum": 0},
                                           "rayStartParams": {"type": "object",
                                                              "additionalProperties": {"type": "string"}}},
                        }},
                    },
                },
            },
        },
    },
}


def test_cluster_launcher_config_matches_rays_schema():
    cfg = _load("cluster.yaml")
    ray_dir = Path(importlib.util.find_spec("ray").origin).parent  # the installed Ray's own schema
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types and len(types) >= 2
    assert cfg["docker"]["head_image"].endswith(":cpu") and cfg["docker"]["worker_image"].endswith(":gpu")
    workers = {n: t for n, t in types.items() if n != head}
    assert all(t.get("max_workers", 0) >= 1 for t in workers.values())
    assert not str(types[head]["node_config"]["InstanceType"]).startswith(("p", "g"))  # CPU head
    assert all(str(t["node_config"]["InstanceType"]).startswith(("p", "g")) for t in workers.values())
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "--metrics-export-port" in start
    assert not [p for p, v in _walk(cfg) if isinstance(v, str) and _SECRET_VALUE.search(v)]


def test_rayjob_runs_generate_with_spec_from_configmap_and_secret_by_name():
    job, cm = _load("rayjob.yaml"), _load("configmap.yaml")
    jsonschema.validate(job, RAYJOB_SCHEMA)
    spec = job["spec"]
    assert spec["entrypoint"].split() == ["python", "-m", "jobs.generate", "/config/job.yaml"]
    cluster = spec["rayClusterSpec"]
    head_pod = cluster["headGroupSpec"]["template"]
    # The driver runs on the head: the ConfigMap holding job.yaml is mounted at /config there.
    volumes = {v["name"]: v for v in head_pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for c in _containers(head_pod) for m in c.get("volumeMounts", [])}
    assert volumes[mounts["/config"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert cm["kind"] == "ConfigMap" and "job.yaml" in cm["data"]
    # Every container (driver and replicas write to storage) gets credentials from a Secret, by name.
    pods = [head_pod] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        for c in _containers(pod):
            refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            refs += [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})]
            assert refs == ["dgbatch-s3-credentials"], c["name"]
            # No env var that looks like a credential carries a literal value.
            literal = [e["name"] for e in c.get("env", []) if _SECRET_NAME.search(e["name"]) and "value" in e]
            assert not literal, literal
    for doc in (job, cm):
        leaks = [p for p, v in _walk(doc) if isinstance(v, str) and _SECRET_VALUE.search(v)]
        assert not leaks, leaks
    # Replicas run on GPU pods in the GPU image; the head has no GPU.
    for g in cluster["workerGroupSpecs"]:
        (c,) = _containers(g["template"])
        assert c["resources"]["limits"]["nvidia.com/gpu"] and c["image"].endswith(":gpu")
    assert "nvidia.com/gpu" not in str(head_pod) and _containers(head_pod)[0]["image"].endswith(":cpu")


def test_configmap_job_spec_is_a_valid_spec_that_fits_the_cluster():
    cm, job = _load("configmap.yaml"), _load("rayjob.yaml")
    spec = JobSpec.parse(yaml.safe_load(cm["data"]["job.yaml"]), source="infra/configmap.yaml")
    gpus = sum(g["replicas"] * int(_containers(g["template"])[0]["resources"]["limits"]["nvidia.com/gpu"])
               for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    res = spec.resources
    assert res.num_gpus_per_replica >= 1 and res.replicas * res.num_gpus_per_replica <= gpus
    assert spec.output.path.startswith("s3://") and spec.input.path.startswith("s3://")


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in (INFRA / name).read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    assert not buf, f"{name}: dangling line continuation"
    return out


@pytest.mark.parametrize(("name", "base", "torch_index"), [
    ("Dockerfile.gpu", "nvidia/cuda:", "/whl/cu"),
    ("Dockerfile.cpu", "python:3.11", "/whl/cpu"),
])
def test_dockerfiles(name, base, torch_index):
    ins = _instructions(name)
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "ENTRYPOINT", "CMD", "LABEL", "EXPOSE"}
    assert {i for i, _ in ins} <= known
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) == 1 and froms[0].startswith(base)
    runs = [a for i, a in ins if i == "RUN"]
    torch_at = next(k for k, a in enumerate(runs) if "pip install" in a and "torch==" in a)
    assert torch_index in runs[torch_at] or "TORCH_INDEX_URL" in runs[torch_at]
    assert any(torch_index in a for i, a in ins if i == "ARG")
    project_at = next(k for k, a in enumerate(runs) if "pip install --no-deps ." in a)
    deps_at = next(k for k, a in enumerate(runs) if "requirements" in a and "pip install" in a)
    assert torch_at < deps_at < project_at  # torch from the right index before anything could pull another
    # Only the sources are copied, and the image does not run as root.
    assert all(not a.startswith(". ") for i, a in ins if i == "COPY")
    assert [a for i, a in ins if i == "USER"][-1] not in ("root", "0")
    ignore = (INFRA / f"{name}.dockerignore").read_text().split()
    assert ignore[ignore.index("**") + 1:] and ".venv" not in " ".join(x for x in ignore if x.startswith("!"))
    # Entrypoints say `python` (rayjob.yaml, infra/README.md) and run with the head's PATH: the build checks
    # that the `python` on the image's PATH imports dgbatch, and a venv image puts its bin first on PATH.
    assert any(a.startswith("pip install --no-deps .") and 'python -c "import' in a and "jobs.generate" in a
               for a in runs)
    env = " ".join(a for i, a in ins if i == "ENV")
    venv = re.search(r"VIRTUAL_ENV=(\S+)", env)
    assert venv is None or f"PATH={venv.group(1)}/bin:$PATH" in env


def test_readme_covers_submit_resume_outputs_and_sizing():
    text = (INFRA / "README.md").read_text()
    for needle in ("ray job submit", "--runtime-env-json", "RAY_AUTH_MODE", "## Resuming", "_commits/",
                   "-- python -m jobs.generate job.yaml", "dgbatch-ray start --head",
                   "No module named 'jobs'",
                   "H100 80GB", "H200 141GB", "A100 80GB", "L40S 48GB", "dgbatch report"):
        assert needle in text, needle
