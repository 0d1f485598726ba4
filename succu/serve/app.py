"""The page's web side: a FastAPI app streaming server-sent events, and a local server thread.

Routes:
    GET /             the page (static/index.html; static/page.js beside it)
    GET /info         the checkpoint's model and dial, and each control's limits (JSON)
    GET /stream?prompt=...&alpha=...&temperature=...&top_p=...&max_new_tokens=...&seed=...
                      server-sent events: `start` (the position and settings this stream uses),
                      `token` per new piece, then `done`, or one `error` with a one-line message

Every request reaches the stream route with status 200 and any bad value comes back as an `error`
event: the browser's EventSource cannot read the body of a 422, so the page could not show it.

This module imports FastAPI and uvicorn (the `serve` extra); `succu.serve.__main__` imports it only
when the command runs.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from succu.serve.streams import Served, TokenStream, one_line

STATIC = resources.files("succu.serve") / "static"


def make_app(served: Served) -> FastAPI:
    """The app for one loaded checkpoint (shared read-only by every stream)."""
    app = FastAPI(title=f"succu · {served.name}", docs_url=None, redoc_url=None)
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    script = (STATIC / "page.js").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/page.js")
    def page_js() -> Response:
        return Response(script, media_type="text/javascript")

    @app.get("/favicon.ico")
    def favicon() -> Response:  # none: an empty answer keeps the browser's console quiet
        return Response(status_code=204)

    @app.get("/info")
    def info() -> JSONResponse:
        return JSONResponse(served.info())

    @app.get("/stream", response_class=EventSourceResponse)
    async def stream(request: Request) -> AsyncIterator[ServerSentEvent]:
        async for event in events(served, dict(request.query_params)):
            yield event

    return app


async def events(served: Served, params: dict[str, str]) -> AsyncIterator[ServerSentEvent]:
    """One stream's events. Generation runs on the stream's own worker thread, which hands each
    event to this request's event loop; when the client goes away (the page moved the dial and
    opened a new stream, or closed), the response is cancelled and `finally` stops the worker."""
    try:
        request = served.parse(params)
        served.claim()
    except ValueError as err:
        yield ServerSentEvent(event="error", data={"message": one_line(err)})
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def emit(event: str, data: dict[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (event, data))
        except RuntimeError:  # the loop is closed: the server is shutting down
            worker.stop()

    worker = TokenStream(served, request, emit)
    try:
        yield ServerSentEvent(event="start", data=served.describe(request))
        worker.start()
        while True:
            event, data = await queue.get()
            yield ServerSentEvent(event=event, data=data)
            if event in ("done", "error"):
                return
    finally:
        worker.stop()
        if worker.thread.ident is None:  # cancelled before it started: its slot is still held
            served.release()


def bind(host: str, port: int) -> socket.socket:
    """A listening address for uvicorn, bound here so that a busy port or a bad host is one line,
    and port 0 (a free port) is known before the server starts."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err} (is another "
                         "server there? pick another --port)") from None
    return sock


def server_for(served: Served) -> uvicorn.Server:
    # A short graceful shutdown: open streams end with the connection, nothing waits on them.
    config = uvicorn.Config(make_app(served), log_level="warning", timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def local_server(served: Served, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the page from a background thread for the block; yields its URL (port 0: a free
    port). Tests and screenshots use it."""
    sock = bind(host, port)
    server = server_for(served)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the page's server on {url_of(sock)} failed to start")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve_forever(served: Served, host: str, port: int) -> None:
    """`python -m succu.serve`: serve until Ctrl-C."""
    sock = bind(host, port)
    print(f"succu: serving {served.name} ({type(served.module.model).__name__}) at {url_of(sock)}"
          "  (Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {host}: anyone who can reach it can use the page (no login)",
              file=sys.stderr, flush=True)
    server_for(served).run(sockets=[sock])
