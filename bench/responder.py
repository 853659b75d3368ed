"""A minimal CalDAV ``sync-collection`` responder for the many-calendars benchmark.

Radicale alone cannot answer 10,000 REPORTs a minute on this machine, so the fleet
benchmark (bench/fleet.py) points its calendars here instead: an asyncio HTTP/1.1 server on
loopback that answers every ``REPORT`` on ``/cal/<n>/`` with an empty delta and a fixed
sync token, after ``delay`` seconds — the added round-trip time of a distant server (the
delay is inside the responder rather than in a separate proxy: the client sees the same
thing, one request answered ``delay`` later, and nothing else sits on the path). It runs
in its own process so that its CPU is reported apart from syncd's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import sys

BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<D:multistatus xmlns:D="DAV:"><D:sync-token>http://bench/sync/1</D:sync-token>'
    b"</D:multistatus>"
)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(
                b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml; charset=utf-8\r\n"
                b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _serve(sock: socket.socket, delay: float) -> None:
    async def main() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await _handle(r, w, delay)

        server = await asyncio.start_server(handle, sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Responder:
    """The responder process: ``url(n)`` is calendar n's collection; ``cpu()`` its CPU seconds."""

    def __init__(self, delay: float = 0.05) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.process = multiprocessing.Process(target=_serve, args=(self.sock, delay), daemon=True)
        self.process.start()

    def url(self, n: int) -> str:
        """The collection URL of calendar ``n``."""
        return f"http://127.0.0.1:{self.port}/cal/{n}/"

    def cpu(self) -> float:
        """CPU seconds (user + system) the responder has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        self.process.join(5)
        self.sock.close()


if __name__ == "__main__":  # python -m bench.responder 0.05: serve until interrupted
    r = Responder(float(sys.argv[1]) if len(sys.argv) > 1 else 0.05)
    print(r.url(0), flush=True)
    r.process.join()
