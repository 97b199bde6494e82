"""Process-group ownership for the tritonserver a Glotta process launches.

tritonserver starts in a process group of its own; its Python-backend stubs inherit it. `stop_group` ends the whole
group — SIGTERM, a bounded grace period, then SIGKILL (a stub stuck in its model's `finalize` ignores SIGTERM). The
watchdog (`python -m glotta.server.triton.watchdog OWNER_PID GROUP GRACE LOG SHM_PREFIX`) runs in a session of its
own beside the launcher and does the same when the launcher dies without cleaning up — even by SIGKILL, which no
handler sees. Either way the Python backend's shared-memory regions of that launch (`/dev/shm/SHM_PREFIX*`, a prefix
unique to it) are removed: a killed tritonserver leaves them behind otherwise.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: not ours
        return False


def stop_group(pgid: int, grace: float, reap=None) -> str:
    """SIGTERM to the group, then SIGKILL after `grace` seconds; returns how it ended. `reap` (the leader's
    `Popen.poll`) lets a launcher collect its child so the group can empty."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return "already gone"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return "stopped"
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    for _ in range(50):  # SIGKILL cannot be ignored: the group empties as soon as the kernel reaps it
        if reap is not None:
            reap()
        if not group_alive(pgid):
            break
        time.sleep(0.1)
    return f"killed after {grace:g} s"


SHM = Path("/dev/shm")


def remove_shm(prefix: str) -> int:
    """Remove the shared-memory regions named with this launch's prefix; returns how many there were."""
    if not prefix:
        return 0
    gone = 0
    for region in SHM.glob(f"{prefix}*"):
        try:
            region.unlink()
            gone += 1
        except OSError:
            pass
    return gone


def _log(path: Path, message: str) -> None:
    with path.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} glotta watchdog: {message}\n")


def main(argv: list[str]) -> int:
    owner, pgid, grace, log = int(argv[0]), int(argv[1]), float(argv[2]), Path(argv[3])
    prefix = argv[4] if len(argv) > 4 else ""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the launcher, which cleans up itself
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while group_alive(pgid):
        if os.getppid() != owner:  # the launcher is gone (reparented to init): nobody else will stop the server
            _log(log, f"launcher {owner} is gone; stopping tritonserver group {pgid}")
            _log(log, f"tritonserver group {pgid}: {stop_group(pgid, grace)}; "
                      f"{remove_shm(prefix)} shared-memory region(s) removed")
            return 0
        time.sleep(0.25)
    remove_shm(prefix)  # the group ended by itself (a crash): what it left in /dev/shm goes too
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
