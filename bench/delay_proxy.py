"""A TCP proxy on loopback that adds round-trip time: every byte is passed on ``rtt / 2``
seconds after it arrived, in each direction, in order (a distant server's latency, without
its bandwidth limits). It runs in a process of its own, so its CPU is neither syncd's nor
the server's. Used by ``python -m bench.mirror --rtt MS``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``src`` to ``dst``, each chunk ``delay`` s after it arrived; EOF passes on too."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await src.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await task
    except (ConnectionError, OSError):
        task.cancel()


def _serve(sock: socket.socket, target: int, delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pump(reader, up_writer, delay), _pump(up_reader, writer, delay))
        finally:
            writer.close()
            up_writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class DelayProxy:
    """``127.0.0.1:port`` forwards to ``127.0.0.1:target`` with ``rtt`` s added."""

    def __init__(self, target: int, rtt: float) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port: int = self.sock.getsockname()[1]
        args = (self.sock, target, rtt / 2)
        self.process = multiprocessing.Process(target=_serve, args=args, daemon=True)
        self.process.start()

    def stop(self) -> None:
        """Stop the process."""
        self.process.terminate()
        self.process.join(5)
        self.sock.close()
