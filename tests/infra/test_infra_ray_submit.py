"""End to end as a cluster user would: `dgbatch-ray start --head` on loopback, `ray job submit` the example
job with the documented entrypoint (`python -m jobs.generate job.yaml`), then check its output, the metrics
on the head's Prometheus endpoint, and the report. Stops only the head it started (never `ray stop`, which
would kill every other Ray on the machine, other tests' included).

The head is started from a shell where the venv is not active: its PATH's `python` is a stub that fails
(another interpreter, as a pyenv shim or /usr/bin/python would be). `ray job submit` runs entrypoints in
the head's environment, so the documented command works only because `dgbatch-ray` (jobs/generate.py)
puts the venv's bin first on the head's PATH.

The head runs with token auth on and a private token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), as Ray 2.60
does by default once a token exists; `ray job submit` needs the same two variables, as on a real cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO_SPEC = REPO / "jobs" / "examples" / "demo.yaml"
RAY = str(Path(sys.executable).with_name("ray"))
DGBATCH_RAY = str(Path(sys.executable).with_name("dgbatch-ray"))


_GIVEN: set[int] = set()


def _free_port() -> int:
    """A free port on 127.0.0.1, never one this process handed out before: each call binds and closes, so the
    OS may offer the same number again, and Ray refuses a head whose components share a port (seen once)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (our head's private temp dir names every Ray process)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def _foreign_python_path(stub_dir: str) -> str:
    """A PATH whose `python` is not this venv's: a stub that fails loudly first, then the current PATH
    without the venv's bin directory (a shell where the venv is not activated)."""
    os.makedirs(stub_dir, exist_ok=True)
    stub = os.path.join(stub_dir, "python")
    with open(stub, "w") as f:
        f.write("#!/bin/sh\necho 'the stub python of a shell without the venv' >&2\nexit 97\n")
    os.chmod(stub, 0o755)
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != venv_bin]
    return os.pathsep.join([stub_dir, *rest])


class Head:
    """A `dgbatch-ray start --head --block` process on 127.0.0.1 with every port chosen free, in its own
    session, started from a PATH whose `python` is a stub (`foreign_python`)."""

    def __init__(self) -> None:
        # Short path: Ray's Unix sockets live under it and must stay below the 107-byte limit.
        self.temp_dir = tempfile.mkdtemp(prefix="dgh-", dir="/tmp")
        self.foreign_python = os.path.join(self.temp_dir, "shell-bin", "python")
        self.dashboard_port = _free_port()
        self.metrics_port = _free_port()
        self.gcs_port = _free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("VIRTUAL_ENV", None)
        self.env["PATH"] = _foreign_python_path(os.path.dirname(self.foreign_python))
        ports = {"--port": self.gcs_port, "--dashboard-port": self.dashboard_port,
                 "--metrics-export-port": self.metrics_port, "--ray-client-server-port": _free_port(),
                 "--dashboard-agent-listen-port": _free_port(), "--dashboard-agent-grpc-port": _free_port(),
                 "--runtime-env-agent-port": _free_port(), "--node-manager-port": _free_port(),
                 "--object-manager-port": _free_port()}
        cmd = [DGBATCH_RAY, "start", "--head", "--block", f"--temp-dir={self.temp_dir}",
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
               "--num-cpus=2",
               "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items()),
               # Flush metrics every 0.5 s (default 10 s) so short-lived test processes get exported.
               '--system-config={"metrics_report_interval_ms": 500}']
        self.log = open(os.path.join(self.temp_dir, "ray-start.log"), "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.temp_dir)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until the job API answers (401 counts: it is up, and it wants the token)."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self._log_tail()}")
            try:
                urllib.request.urlopen(f"{self.address}/api/version", timeout=2).read()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"Ray head not ready after {timeout_s}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-2000:]

    def stop(self) -> None:
        """SIGTERM to our `ray start --block` (it stops the processes it started), then make sure: any
        process still naming our private temp dir, and our process group, get SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(20):
            left = _processes_mentioning(self.temp_dir)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.25)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session we created; nobody else is in it
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def head():
    h = Head()
    try:
        h.wait_ready()
        yield h
    finally:
        h.stop()
        assert not _processes_mentioning(h.temp_dir), "Ray processes of our head survived stop()"


def _metric(head: Head, name: str, **tags: str) -> float:
    """Sum of the series `name` whose tags include `tags`, from the head's Prometheus endpoint."""
    url = f"http://127.0.0.1:{head.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    total = 0.0
    for ln in body.splitlines():
        if ln.startswith(name + "{") and all(f'{k}="{v}"' in ln for k, v in tags.items()):
            total += float(ln.rsplit(" ", 1)[1])
    return total


def _submit(head: Head, *entrypoint: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    # No --working-dir: the package is installed (editable) in this venv, which the head's workers share.
    cmd = [RAY, "job", "submit", "--address", head.address, "--", *entrypoint]
    return subprocess.run(cmd, env=head.env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)


def test_dgbatch_ray_runs_ray_with_this_interpreter_first_on_path(monkeypatch):
    """The console script `dgbatch-ray` (pyproject.toml) execs this environment's `ray` with its bin first."""
    import tomllib

    from jobs import generate

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["dgbatch-ray"] == "jobs.generate:ray_main"
    seen: dict = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: seen.update(path=path, argv=argv, env=env))
    monkeypatch.setenv("PATH", _foreign_python_path(tempfile.mkdtemp(prefix="dgp-")))
    assert generate.ray_main(["start", "--head", "--block"]) == 0
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))
    assert seen["path"] == os.path.join(bin_dir, "ray") and seen["argv"][1:] == ["start", "--head", "--block"]
    path = seen["env"]["PATH"].split(os.pathsep)
    assert path[0] == bin_dir and bin_dir not in path[1:] and path[1:] == os.environ["PATH"].split(os.pathsep)
    assert shutil.which("python", path=seen["env"]["PATH"]) == os.path.join(bin_dir, "python")


@pytest.mark.slow
def test_job_submit_requires_the_token(head):
    env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_TOKEN"}
    env["RAY_AUTH_TOKEN"] = "0" * 64
    out = subprocess.run([RAY, "job", "list", "--address", head.address], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "uthenticat" in out.stdout + out.stderr


@pytest.mark.slow
def test_entrypoint_python_is_the_heads_not_the_shells(head):
    """`python` in an entrypoint is the venv's although the shell that started the head had another."""
    assert shutil.which("python", path=head.env["PATH"]) == head.foreign_python
    out = _submit(head, "python", "-c", "import sys, jobs.generate; print('EXE', sys.executable)")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert f"EXE {os.path.abspath(sys.executable)}" in out.stdout, out.stdout[-4000:]


@pytest.mark.slow
def test_submit_example_job_check_output_metrics_and_report(head, tmp_path):
    assert DEMO_SPEC.is_file(), f"{DEMO_SPEC} is missing (the pipeline's example job)"
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    in_path = Path(spec["input"]["path"])
    in_path = in_path if in_path.is_absolute() else (REPO / in_path)  # demo.yaml: relative to the repo
    out_dir = tmp_path / "out"
    spec["input"]["path"] = str(in_path.resolve())
    spec["output"]["path"] = str(out_dir)
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(yaml.safe_dump(spec))

    out = _submit(head, "python", "-m", "jobs.generate", str(job_yaml))  # as infra/README.md says
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "succeeded" in out.stdout
    assert (out_dir / "_SUCCESS").exists()
    manifest = json.loads((out_dir / "_manifest.json").read_text())
    in_ids = pq.read_table(in_path).num_rows
    commits = [json.loads(p.read_text()) for p in (out_dir / "_commits").glob("*.json")]
    got = [i for c in commits
           for i in pq.read_table(out_dir / c["file"], columns=["id"]).column("id").to_pylist()]
    assert len(got) == len(set(got)) == in_ids == manifest["rows"]
    # The replicas' metrics (pipeline.metrics inside real Ray actors) reached the head's Prometheus
    # endpoint, tagged per replica: every row counted under its status (a retried shard may count twice).
    deadline = time.time() + 15
    while _metric(head, "ray_dgbatch_rows_total") < in_ids and time.time() < deadline:
        time.sleep(0.5)
    assert _metric(head, "ray_dgbatch_rows_total") >= in_ids
    by_status = sum(_metric(head, "ray_dgbatch_rows_total", status=s) for s in ("ok", "invalid", "error"))
    assert by_status == _metric(head, "ray_dgbatch_rows_total")
    assert _metric(head, "ray_dgbatch_tokens_total") > 0
    assert _metric(head, "ray_dgbatch_shard_seconds_count") >= len(commits)

    # (Resume by rerunning is the pipeline's own test: tests/pipeline/test_pipeline_run.py.)
    from pipeline.report import write_report

    index = Path(write_report(str(out_dir)))
    page = index.read_text()
    assert ">finished<" in page and f"{in_ids} of {in_ids}" in page
