"""`lstm-mt serve` in a child process on a free port of this machine: for tests, load tests and scripts.

    with LocalServer("best.pt", "search.beam_size=1") as server:
        urllib.request.urlopen(server.url + "v1/health")
    server.returncode  # after a graceful stop (SIGTERM): 0

Standard library only; the child needs the ``serve`` extra.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from lstm_mt.errors import LstmMtError

URL_LINE = re.compile(r"lstm-mt serve: (http://\S+/) ")


class LocalServer:
    """A server for ``checkpoint`` on 127.0.0.1 and a free port; Hydra ``overrides`` as for the command.

    Entering starts it and waits (up to ``startup_timeout`` seconds) until ``/v1/health`` answers;
    leaving stops it with SIGTERM, as a service manager would. Its output goes to ``log_path``.
    """

    def __init__(self, checkpoint: str | os.PathLike, *overrides: str, startup_timeout: float = 120.0) -> None:
        self.command = [sys.executable, "-m", "lstm_mt", "serve", f"checkpoint={checkpoint}", "port=0", *overrides]
        self.startup_timeout = startup_timeout
        self.log_path = Path(tempfile.mkstemp(prefix="lstm-mt-serve-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the child and wait until it answers ``/v1/health``; `LstmMtError` with its log if it does not."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LstmMtError(f"lstm-mt serve exited with {self.process.returncode}:\n{self.log()}")
            if not self.url and (match := URL_LINE.search(self.log())):
                self.url = match.group(1)
            if self.url and self._healthy():
                return
            time.sleep(0.1)
        self.stop()
        raise LstmMtError(f"lstm-mt serve did not answer within {self.startup_timeout:.0f} s:\n{self.log()}")

    def terminate(self) -> None:
        """Send SIGTERM (a graceful stop: requests in flight are answered first)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait up to ``timeout`` seconds (then kill); the exit status."""
        if self.process is None:
            return None
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    @property
    def returncode(self) -> int | None:
        """The child's exit status, None while it runs."""
        return None if self.process is None else self.process.poll()

    def log(self) -> str:
        """Everything the child printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "v1/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
