"""The floor for Python: uvloop's raw protocol, no HTTP framework, each event encoded once and
written to every subscriber's transport.

    python raw_uvloop_limit.py 9101

`GET /sub` opens an SSE stream; `POST /pub` sends its body as one `data:` event to every stream.
"""

import asyncio
import sys

import uvloop

subscribers: set[asyncio.Transport] = set()
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"


class Peer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if head.startswith(b"GET"):
                self.transport.write(HEAD)
                subscribers.add(self.transport)
            else:
                frame = b"data: " + body + b"\n\n"
                for transport in subscribers:
                    transport.write(frame)
                self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        subscribers.discard(self.transport)


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Peer, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main())
