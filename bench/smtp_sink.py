"""An SMTP sink in a process of its own, for benchmarks: aiosmtpd on 127.0.0.1.

A real SMTP server is another program; the test sink (tests/smtp_server.py) runs in a
thread of the caller and parses every message back, which takes the caller's GIL while
syncd sends. This one (``python -m bench.smtp_sink FOLDER PORT``) keeps each message's raw
bytes in a folder (``<n>.eml``, renamed into place once whole) and does nothing else, so
the sender's process does nothing for the server.

``SinkProcess(folder)`` starts it; ``.port``, ``.count``, ``.wait_for(n)``,
``.raw_messages()``, ``.stop()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.smtp_server import free_port


class _Keep:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.n = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        part = self.folder / f"{self.n:06d}.part"
        part.write_bytes(envelope.original_content)
        part.rename(part.with_suffix(".eml"))
        self.n += 1
        return "250 OK"


class SinkProcess:
    """The sink's process; messages land in ``folder``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.smtp_sink", str(folder), str(self.port)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != b"ready":
            self.stop()
            raise RuntimeError("the SMTP sink did not start")

    @property
    def count(self) -> int:
        """Messages received so far."""
        return sum(1 for _ in self.folder.glob("*.eml"))

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        """Return once ``n`` messages in all have been received."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sink has {self.count} messages, not {n}")
            time.sleep(0.002)

    def raw_messages(self) -> list[bytes]:
        """Every received message's bytes, in order."""
        return [p.read_bytes() for p in sorted(self.folder.glob("*.eml"))]

    def stop(self) -> None:
        """Stop the process."""
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _main(folder: str, port: str) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(_Keep(Path(folder)), hostname="127.0.0.1", port=int(port))
    controller.start()
    print("ready", flush=True)
    parent = os.getppid()
    try:
        while os.getppid() == parent:  # the bench went away without stopping it: stop too
            time.sleep(0.5)
    finally:
        controller.stop()


if __name__ == "__main__":
    _main(*sys.argv[1:3])
