"""A fault-injecting HTTP proxy in front of an S3 server (moto), and the seeded random fault policy.

`FaultProxy` listens on 127.0.0.1 and forwards every request to the upstream S3 endpoint unless its
policy names a fault for it; then it answers itself with an S3 error: 503 SlowDown, 503
ServiceUnavailable, 500 InternalError, 403 AccessDenied, or "lost": the request IS forwarded and applied
upstream, but its answer is replaced by a 500 InternalError (as when S3 commits a write and the
connection then drops). Everything that talks to the store goes through it (the driver, the replicas,
which only need the endpoint URL, and readers); assertions look at the bucket directly.

A policy is `policy(method, target, n) -> fault name | "pass"`, where `n` counts earlier requests with
the same method and target, so a policy that depends only on its arguments gives every key the same
faults in the same order whatever the timing. Used by tests/pipeline/test_pipeline_storage_faults.py
(fixed schedules) and bench/chaos.py (`RandomFaults`).
"""

from __future__ import annotations

import http.client
import random
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

ERRORS = {  # fault -> (HTTP status, S3 error code, message)
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "unavailable": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "lost": (500, "InternalError", "We encountered an internal error. Please try again."),
    "denied": (403, "AccessDenied", "Access Denied"),
}
OUT = re.compile(r"[/=]out/")  # a key or a listing prefix under the job's output prefix ("<bucket>/out")
WRITES = ("PUT", "POST", "DELETE")


class FaultProxy(ThreadingHTTPServer):
    """Forwards S3 requests to `upstream` unless `policy(method, target, n)` names a fault.

    `faults` counts what was injected, by (fault, method, area) where area is "commit" (a commit
    marker), "out" (anything else under the output prefix) or "in"; `seen` counts requests by
    (method, target).
    """

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = urlsplit(upstream).netloc
        self.policy = lambda method, target, n: "pass"
        self.lock = threading.Lock()
        self.seen: Counter = Counter()
        self.faults: Counter = Counter()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        # A client killed mid-request (a SIGKILLed replica or driver) resets its connection: no traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def decide(self, method: str, target: str) -> str:
        with self.lock:  # policies run one at a time, so they may keep state without their own lock
            n = self.seen[(method, target)]
            self.seen[(method, target)] += 1
            fault = self.policy(method, target, n)
            if fault != "pass":
                area = "out" if OUT.search(target) else "in"
                self.faults[(fault, method, "commit" if "/_commits/" in target else area)] += 1
            return fault

    def reset(self, policy) -> None:
        with self.lock:
            self.policy, self.seen, self.faults = policy, Counter(), Counter()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.server.decide(self.command, unquote(self.path))
        if fault in ("pass", "lost"):
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
            conn = http.client.HTTPConnection(self.server.upstream, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            if fault == "pass":
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # A HEAD answer carries the object's length but no body.
                self.send_header("Content-Length", resp.getheader("Content-Length", "0")
                                 if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                return
        status, code, message = ERRORS[fault]
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
               f"</Message><RequestId>fault-proxy</RequestId></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, *args) -> None:  # quiet
        pass


# Relative weights of the fault kinds. "lost" only means something for a write (a read applies nothing).
_WRITE_KINDS = {"lost": 4, "slowdown": 2, "unavailable": 2, "internal": 2}
_READ_KINDS = {"slowdown": 4, "unavailable": 3, "internal": 3}


class RandomFaults:
    """A seeded random policy: each request is faulted with probability `p`, up to `cap` faults in all.

    A request's fate is drawn from `random.Random(f"{seed}|{method}|{target}|{n}")`, so for a given `p`
    it depends on the request's identity and its place in its key's sequence, not on how the processes
    interleave. `p`, `cap` and `enabled` may be changed at any time (bench/chaos.py steers them by its
    fault budget).

    Bounded per key, so S3 faults alone never fail an operation for good: every key gets at most
    `per_key_out` faults over the whole run under the output prefix and `per_key_in` elsewhere. botocore
    makes 3 attempts (pipeline.storage sets max_attempts=2 retries), so 2 faults on an input key are
    always absorbed below the pipeline. (The soak found that planning read input footers without the
    pipeline's own retry loop, so a third fault failed the job; pipeline/shards.py `read_metadata` now
    retries. The input cap stays at 2, the setting of the run in bench/RESULTS.md.) Every access under the
    output prefix goes through
    pipeline.storage's `with_retries` (6 attempts), so 3 faults there may outlast botocore once and are
    then retried by the pipeline itself, which is the path that must not duplicate.
    """

    def __init__(self, seed: int, p: float, cap: int, *, per_key_out: int = 3, per_key_in: int = 2):
        self.seed, self.p, self.cap = seed, p, cap
        self.per_key_out, self.per_key_in = per_key_out, per_key_in
        self.enabled = True
        self.total = 0
        self.events: list[tuple[float, str, str, str]] = []  # (unix time, method, target, fault)
        self._per_key: Counter = Counter()

    def __call__(self, method: str, target: str, n: int) -> str:
        if not self.enabled or self.total >= self.cap:
            return "pass"
        key = (method, target)
        if self._per_key[key] >= (self.per_key_out if OUT.search(target) else self.per_key_in):
            return "pass"
        rng = random.Random(f"{self.seed}|{method}|{target}|{n}")
        if rng.random() >= self.p:
            return "pass"
        kinds = _WRITE_KINDS if method in WRITES else _READ_KINDS
        fault = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        self._per_key[key] += 1
        self.total += 1
        self.events.append((time.time(), method, target, fault))
        return fault
