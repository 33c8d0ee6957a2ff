"""`python -m kumo.edge.supervise COMMAND...`: runs ExaBGP for the agent and makes sure it ends with the agent.

The agent starts this process with PR_SET_PDEATHSIG = SIGTERM: when the agent dies, even by SIGKILL, the
kernel sends this process SIGTERM. It then stops ExaBGP as the agent would have: SIGTERM (ExaBGP closes its
sessions with a Cease NOTIFICATION, so the peers withdraw our routes at once) and SIGKILL if ExaBGP has not
exited within STOP_GRACE_S. (ExaBGP 5.0.15 has been seen spinning forever in its shutdown when its peer's
network had gone.) The kernel cannot do this for ExaBGP itself: ExaBGP drops its privileges to `nobody`
once started, and a change of user clears the parent-death signal; this process stays root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

STOP_GRACE_S = 3.0


def main() -> None:
    child = subprocess.Popen(sys.argv[1:])  # (same process group: the agent's SIGKILL of the group takes both)

    def stop(signum: int, frame: FrameType | None) -> None:
        child.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if child.poll() is None:
            child.kill()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if os.getppid() == 1:  # the agent died before the handler was in place
        stop(signal.SIGTERM, None)
    sys.exit(child.wait())


if __name__ == "__main__":
    main()
