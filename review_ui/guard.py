"""Before the app reads a request body: refuse writes from nobody, and bodies over a size.

An anonymous 300 MB JSON body used to be read whole (the server grew by 900 MB) before the
app answered 401. This ASGI middleware answers first: 401 for an API write that carries no
credentials at all (neither a bearer token nor a session cookie; whether they are valid is
the routes' business), 413 for a body over the limit, by its Content-Length or, when it
streams without one, as soon as it has sent more.
"""

from __future__ import annotations

import json

SAFE_METHODS = (b"GET", b"HEAD", b"OPTIONS")


class BodyGuard:
    def __init__(self, app, *, max_body: int, session_cookie: str):
        self.app, self.max_body, self.cookie = app, max_body, session_cookie.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"].encode() in SAFE_METHODS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if scope["path"].startswith("/api/") and not self._credentials(headers):
            return await _answer(send, 401, "log in first", {"www-authenticate": "Bearer"})
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            return await _answer(send, 413, f"the request body is over {self.max_body} bytes")
        seen, too_large = 0, False

        async def counted_receive():
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:  # the app gets an end of body here; its answer is replaced below
                too_large = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def watched_send(message):
            if not too_large:
                return await send(message)
            if message["type"] == "http.response.start":
                await _answer(send, 413, f"the request body is over {self.max_body} bytes")

        await self.app(scope, counted_receive, watched_send)

    def _credentials(self, headers: dict) -> bool:
        if headers.get(b"authorization", b"")[:7].lower() == b"bearer ":
            return True
        return any(part.strip().startswith(self.cookie + b"=") for part in headers.get(b"cookie", b"").split(b";"))


async def _answer(send, status: int, detail: str, headers: dict | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
