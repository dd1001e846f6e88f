"""One pod's container as one process: started, probed for readiness, watched, stopped.

A pod that exits while the deployment runs is a failure of the deployment, whatever its exit
status: every long-running workload of facerank is meant to stay up (Jobs' pods are followed
by :mod:`.jobs` instead, where exiting is their purpose).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

STOP_GRACE_S = 10.0
_POLL_S = 0.2


@dataclass
class PodProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log: Path
    ready_url: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self) -> str:
        return f"pod {self.name} exited with status {self.exit_code}; its log ends:\n{self.tail()}"

    def wait_ready(self, deadline_s: float) -> None:
        """Until the readiness probe answers 2xx; AssertionError if the pod exits first."""
        end = time.monotonic() + deadline_s
        while True:
            assert self.exit_code is None, self.failure()
            if not self.ready_url:
                return
            try:
                if requests.get(self.ready_url, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < end, (
                f"pod {self.name} not ready in {deadline_s} s:\n{self.tail()}"
            )
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends it, then SIGKILL after the grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_GRACE_S)
