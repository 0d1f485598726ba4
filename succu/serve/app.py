"""The page's web side: a FastAPI app streaming server-sent events, and a local server thread.

Routes:
    GET /             the page (static/index.html; static/page.js beside it)
    GET /info         the checkpoint's model and dial, and each control's limits (JSON)
    GET /stream?prompt=...&alpha=...&temperature=...&top_p=...&max_new_tokens=...&seed=...
                      server-sent events: `start` (the position and settings this stream uses),
                      `token` per new piece, then `done`, or one `error` with a one-line message
    GET /panes?alpha=0;1&prompt=...&...
                      side by side (a model with a dial): the same stream at each ';'-separated
                      position in one batched forward pass per token; `start`, `token` and `done`
                      carry the pane's index (`pane`), one `done` per pane; one `error` ends all

Every request reaches the stream route with status 200 and any bad value comes back as an `error`
event: the browser's EventSource cannot read the body of a 422, so the page could not show it.

This module imports FastAPI and uvicorn (the `serve` extra); `succu.serve.__main__` imports it only
when the command runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from succu.serve.streams import PanesStream, Served, TokenStream, one_line

STATIC = resources.files("succu.serve") / "static"


def make_app(served: Served, hosts: HostCheck | None = None) -> FastAPI:
    """The app for one loaded checkpoint (shared read-only by every stream), without OpenAPI
    pages. With `hosts` (what a server passes: the address it serves), a request whose Host header
    names another host is refused with 421, so a web page whose domain resolves to this machine
    (DNS rebinding) cannot use the page from the user's browser."""
    app = FastAPI(title=f"succu · {served.name}", docs_url=None, redoc_url=None, openapi_url=None)
    if hosts is not None:

        @app.middleware("http")
        async def check_host(request: Request, call_next):
            host = request.headers.get("host", "")
            if not hosts.allows(host):
                return PlainTextResponse(f"this page answers only at {hosts}, not at Host {host!r}\n",
                                         status_code=421)
            return await call_next(request)

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

    @app.get("/panes", response_class=EventSourceResponse)
    async def panes(request: Request) -> AsyncIterator[ServerSentEvent]:
        async for event in events(served, dict(request.query_params), panes=True):
            yield event

    return app


async def events(served: Served, params: dict[str, str], panes: bool = False
                 ) -> AsyncIterator[ServerSentEvent]:
    """One stream's events (`panes`: a side-by-side stream's). Generation runs on the stream's
    own worker thread, which hands each event to this request's event loop; when the client goes
    away (the page moved the dial and opened a new stream, or closed), the response is cancelled
    and `finally` stops the worker."""
    try:
        requests = served.parse_panes(params) if panes else [served.parse(params)]
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

    worker = PanesStream(served, requests, emit) if panes else TokenStream(served, requests[0], emit)
    try:
        for pane, request in enumerate(requests):
            start = served.describe(request)
            yield ServerSentEvent(event="start", data={"pane": pane, **start} if panes else start)
        worker.start()
        ending = len(requests)  # one `done` per pane ends the stream; an `error` ends it at once
        while True:
            event, data = await queue.get()
            yield ServerSentEvent(event=event, data=data)
            if event == "done":
                ending -= 1
            if event == "error" or not ending:
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


WILDCARDS = ("0.0.0.0", "::", "")


class HostCheck:
    """The Host headers of requests to the address served: the loopback names (`127.0.0.1`,
    `localhost`, `[::1]`) and the `--host` given (IPv6 in brackets), each with the port listened on
    (bare on port 80, which browsers leave out); bound to every interface (0.0.0.0, ::), any IP
    address with that port too. A name that is no IP literal is what DNS rebinding needs, so
    only `localhost` and the name given pass."""

    def __init__(self, host: str, port: int):
        self.port = port
        self.names = {"127.0.0.1", "localhost", "[::1]", bracketed(host).lower()} - {"", "[::]", "0.0.0.0"}
        self.any_ip = host in WILDCARDS

    def allows(self, header: str) -> bool:
        header = header.lower()
        name, port = header, "80"
        if header.rpartition(":")[2].isdigit() and not header.endswith("]"):
            name, _, port = header.rpartition(":")
        if port != str(self.port):
            return False
        return name in self.names or (self.any_ip and is_ip(name.strip("[]")))

    def __str__(self) -> str:
        return " or ".join(f"{name}:{self.port}" for name in sorted(self.names))


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and is_ip(host) else host


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def server_for(served: Served, host: str, sock: socket.socket) -> uvicorn.Server:
    # A short graceful shutdown: open streams end with the connection, nothing waits on them.
    hosts = HostCheck(host, sock.getsockname()[1])
    config = uvicorn.Config(make_app(served, hosts), log_level="warning",
                            timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def local_server(served: Served, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the page from a background thread for the block; yields its URL (port 0: a free
    port). Tests and screenshots use it."""
    sock = bind(host, port)
    server = server_for(served, host, sock)
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
    server_for(served, host, sock).run(sockets=[sock])
