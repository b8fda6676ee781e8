"""A small WebSocket client for chat system tests and the benchmark: real ``websockets``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

SAME_ORIGIN = "same-origin"


class ChatClient:
    def __init__(
        self,
        base_url: str,
        path: str,
        *,
        cookie: str | None = None,
        origin: str | None = SAME_ORIGIN,
    ):
        """``origin``: the Origin header, like a page at that origin would send (by default
        the server's own; None sends no Origin at all)."""
        self.url = base_url.replace("http://", "ws://") + path
        self.base_url = base_url
        self.origin = base_url if origin == SAME_ORIGIN else origin
        self.headers = {"Cookie": cookie} if cookie else {}
        self.ws: ClientConnection | None = None
        self.backlog: list[dict[str, Any]] = []
        self.markers = 0

    async def connect(self) -> ChatClient:
        self.ws = await connect(
            self.url,
            additional_headers=self.headers,
            origin=Origin(self.origin) if self.origin is not None else None,
            max_size=2**22,
        )
        self.backlog = []
        return self

    async def send(self, frame: dict[str, Any] | str) -> None:
        assert self.ws is not None
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        assert self.ws is not None
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return json.loads(raw)

    async def expect(self, frame_type: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The next frame of ``frame_type`` (matching ``match``); others are kept for later."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        skipped: list[dict[str, Any]] = []
        for index, frame in enumerate(self.backlog):
            if frame["type"] == frame_type and _matches(frame, match):
                del self.backlog[index]
                return frame
        assert self.ws is not None
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {frame_type} {match} within {timeout}s; got {self.backlog + skipped}"
                    )
                try:
                    raw = await asyncio.wait_for(self.ws.recv(), remaining)
                except TimeoutError:
                    raise AssertionError(
                        f"no {frame_type} {match} within {timeout}s; got {self.backlog + skipped}"
                    ) from None
                frame = json.loads(raw)
                if frame["type"] == frame_type and _matches(frame, match):
                    return frame
                skipped.append(frame)
        finally:
            self.backlog.extend(skipped)

    async def settle(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every frame the server sends before the answer to a marker ``ping`` (the backlog
        first); the marker's ``pong`` is consumed.

        "Nothing more arrives" is ``await client.settle() == []``: the server handles a
        socket's frames in order, and a ping first sends whatever the socket missed of its
        conversations, so what the server had for this socket comes before the pong. An event
        still on its way through Redis is not "had": first wait for a frame published after it
        (one Redis connection per process carries events in publish order). A shopper socket
        must have sent ``hello`` first.
        """
        self.markers += 1
        ref = f"marker-{self.markers}"
        await self.send({"type": "ping", "ref": ref})
        frames, self.backlog = self.backlog, []
        assert self.ws is not None
        while True:
            try:
                frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            except TimeoutError:
                raise AssertionError(f"no pong to {ref} within {timeout}s; got {frames}") from None
            if frame == {"type": "pong", "ref": ref}:
                return frames
            frames.append(frame)

    async def drain(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives within ``seconds`` (plus the backlog)."""
        frames, self.backlog = self.backlog, []
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                frames.append(json.loads(await asyncio.wait_for(self.ws.recv(), remaining)))
            except TimeoutError:
                break
        return frames

    async def closed_with(self, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int | None]:
        """Frames received until the server closes, and the close code."""
        frames = list(self.backlog)
        self.backlog = []
        assert self.ws is not None
        try:
            while True:
                frames.append(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))
        except ConnectionClosed as exc:
            return frames, exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def _matches(frame: dict[str, Any], match: dict[str, Any]) -> bool:
    for key, value in match.items():
        current: Any = frame
        for part in key.split("__"):
            if not isinstance(current, dict) or part not in current:
                return False
            current = current[part]
        if current != value:
            return False
    return True
