"""An ASGI middleware that bounds a request body in bytes, whether or not it declares a Content-Length: a
declared length over the limit is refused before anything is read, a chunked body once it passes the limit."""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Message = dict[str, Any]


class BodyTooLarge(Exception):
    """Raised into the app by `receive` once the body passes the limit (the app's own handling is discarded)."""


class BodyLimit:
    """413 with a JSON `error` for a body longer than `max_bytes`; `message` is what the client is told."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int, message: str) -> None:
        self.app, self.max_bytes, self.message = app, max_bytes, message

    async def _refuse(self, send: Callable[[Message], Awaitable[None]], status: int, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await self._refuse(send, 400, f"Content-Length {length.decode(errors='replace')!r} is not a number")
                return
            if int(length) > self.max_bytes:
                await self._refuse(send, 413, f"request body of {int(length)} bytes: {self.message}")
                return
        state = {"seen": 0, "over": False, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_bytes:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # whatever the app answers to the exception, the client gets the 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        if state["over"] and not state["started"]:
            await self._refuse(send, 413, f"request body of more than {self.max_bytes} bytes: {self.message}")
