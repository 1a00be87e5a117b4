"""The watchdog that tears down a local Ray when the driver that started it dies, however it dies.

`ray.init()` without a cluster to join starts gcs_server, the raylet, the log monitor, the dashboard
process and the autoscaler monitor as children of the driver, and the raylet starts the dashboard agent,
the runtime-env agent and the workers. After a driver SIGKILL (OOM killer, `kill -9`, a lost node) most of
them go at once, but the two agents stayed alive, re-parented to init, for about 61 s (measured with
Ray 2.60; `ray.shutdown()` is never reached). This module makes that "however it dies" case clean.

Driver side, `Reaper` (used only by `pipeline.executor.run_job` around `ray.init`/`ray.shutdown`):
`Reaper()` before `ray.init` remembers what this process already had running (not ours to stop);
`watch()` after it starts this file as the watchdog, in a session of its own (a terminal's Ctrl-C or
SIGHUP to the driver's group does not take the watchdog first), only if `ray.init` started processes, so
a Ray the driver joined is never watched; `done()` after `ray.shutdown()` tells it to exit, killing nothing.
The watchdog runs as `python -I .../pipeline/reaper.py`, not `-m pipeline.reaper`: importing the
`pipeline` package would load pyarrow and pydantic (about 90 MB resident, measured) into a process that
needs only the standard library, and `-I` keeps pipeline/ itself (a module there could shadow a standard
one) and the user's site directory off sys.path.

Watchdog side, `main`: it holds the read end of a pipe whose only write end is the driver's. A `done`
byte means a normal end; EOF without it means the driver died (the kernel closes the write end whatever
killed it). While the driver lives it re-reads the driver's descendants every REFRESH_S s (the raylet
starts agents and workers later); each is remembered as (pid, start time from /proc), so a pid the kernel
has since recycled is never signalled. When the driver dies it adds the current descendants of what it
remembers (workers started since the last refresh), sends SIGTERM, waits GRACE_S s, and SIGKILLs what is
left. It only stops processes this driver started, and never runs `ray stop` (that kills every Ray on the
machine). Linux only (it reads /proc); elsewhere `watch()` starts nothing.

No Ray import here: only pipeline/executor.py imports Ray under pipeline/.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time

REFRESH_S = 1.0  # how often the watchdog re-reads the driver's descendants while the driver lives
GRACE_S = 3.0  # SIGTERM -> SIGKILL
DONE = b"d"  # the driver's "normal end" byte

Ident = tuple[int, int]  # (pid, start time in clock ticks since boot): unique for the machine's uptime


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, state) from /proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = raw.rsplit(")", 1)[1].split()  # the command name in (...) may itself hold spaces or ')'
    return int(rest[1]), int(rest[19]), rest[0]


def ident(pid: int) -> Ident | None:
    """This pid's identity now, or None if it has exited (a zombie counts as exited)."""
    st = _stat(pid)
    return None if st is None or st[2] in ("Z", "X") else (pid, st[1])


def alive(who: Ident) -> bool:
    return ident(who[0]) == who


def descendants(root: int, skip: set[Ident] | frozenset[Ident] = frozenset()) -> set[Ident]:
    """Every live process under `root`, except those in `skip` and anything under them."""
    children: dict[int, list[Ident]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[2] not in ("Z", "X"):
                children.setdefault(st[0], []).append((int(entry), st[1]))
    found: set[Ident] = set()
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in skip and kid not in found:
                found.add(kid)
                todo.append(kid[0])
    return found


def send(who: Ident, sig: int) -> bool:
    """Signal `who` only if that pid is still the process we remembered; True if the signal was sent.
    A pidfd pins the process between the identity check and the signal, so there is no recycling race."""
    pid, start = who
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        fd = None  # no pidfd (kernel < 5.3): check, then kill; the window is microseconds
    try:
        if not alive(who):
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def teardown(remembered: set[Ident], grace_s: float = GRACE_S) -> list[Ident]:
    """SIGTERM what is left of `remembered` and of its current descendants, SIGKILL it after `grace_s`.
    Returns the processes that were signalled."""
    targets = {w for w in remembered if alive(w)}
    for w in list(targets):
        targets |= descendants(w[0])
    hit = [w for w in sorted(targets) if send(w, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while any(alive(w) for w in hit) and time.monotonic() < deadline:
        time.sleep(0.1)
    for w in hit:
        send(w, signal.SIGKILL)
    return hit


def _fmt(idents: set[Ident]) -> str:
    return ",".join(f"{p}:{s}" for p, s in sorted(idents))


def _parse(text: str) -> set[Ident]:
    return {(int(p), int(s)) for p, s in (item.split(":") for item in text.split(",") if item)}


class Reaper:
    """Driver side: `Reaper()` before `ray.init`, `watch()` after it, `done()` after `ray.shutdown()`."""

    def __init__(self) -> None:
        self._linux = os.path.isdir("/proc/self")
        self._before = descendants(os.getpid()) if self._linux else set()
        self._proc: subprocess.Popen | None = None
        self._pipe: int | None = None

    @property
    def pid(self) -> int | None:
        """The watchdog's pid, or None when none was started (a joined cluster, or not Linux)."""
        return None if self._proc is None else self._proc.pid

    def watch(self) -> None:
        """Start the watchdog over what this process started since `Reaper()`; nothing if it started none."""
        if not self._linux:
            return
        me = os.getpid()
        started = descendants(me, skip=self._before)
        if not started:
            return  # ray.init joined a running cluster: its processes are not this driver's to stop
        me_ident = ident(me)
        assert me_ident is not None
        read_end, write_end = os.pipe()  # both close-on-exec: Ray's later children never hold the write end
        try:
            cmd = [sys.executable, "-I", os.path.abspath(__file__), "--fd", str(read_end),
                   "--driver", _fmt({me_ident}), "--skip", _fmt(self._before), "--watch", _fmt(started)]
            self._proc = subprocess.Popen(cmd, pass_fds=(read_end,), start_new_session=True,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._pipe = write_end

    def done(self) -> None:
        """A normal end: the watchdog exits and stops nothing."""
        if self._pipe is None:
            return
        try:
            os.write(self._pipe, DONE)
        except OSError:
            pass  # the watchdog is already gone
        os.close(self._pipe)
        self._pipe = None
        assert self._proc is not None
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass  # it exits on its own once it reads the byte; never block the driver's exit on it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline/reaper.py", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="read end of the driver's pipe")
    parser.add_argument("--driver", required=True, help="the driver as PID:START")
    parser.add_argument("--skip", default="", help="PID:START,... the driver had before ray.init")
    parser.add_argument("--watch", default="", help="PID:START,... that ray.init started")
    args = parser.parse_args(argv)
    (driver,) = _parse(args.driver)
    skip = _parse(args.skip)
    me = ident(os.getpid())
    if me is not None:
        skip.add(me)
    remembered = _parse(args.watch)
    while True:
        ready, _, _ = select.select([args.fd], [], [], REFRESH_S)
        if ready:
            if os.read(args.fd, 1) == DONE:
                return 0
            break  # EOF: every copy of the write end is closed, so the driver is gone
        if not alive(driver):
            break  # belt and braces: the pipe should already have said so
        remembered |= descendants(driver[0], skip)
    hit = teardown(remembered)
    if hit:
        try:
            print(f"[dgbatch] driver {driver[0]} died: stopped {len(hit)} processes its local Ray left "
                  f"({_fmt(set(hit))})", file=sys.stderr, flush=True)
        except OSError:
            pass  # nobody is reading the driver's stderr any more
    return 0


if __name__ == "__main__":
    sys.exit(main())
