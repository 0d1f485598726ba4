"""`python -m succu.serve`: request checks, the SSE stream, concurrent streams, stopping, the CLI.

The web-facing tests need the `serve` extra (FastAPI, uvicorn) and httpx (`serve-test`); without
them they skip, saying so. Checkpoints here are tiny untrained models written as `succu.fit`
writes them: what is tested is the serving, not the text (tests/test_serve_browser.py drives the
page in Chromium for a trained one).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.serve import streams
from succu.serve.streams import MAX_NEW_TOKENS, Served
from succu.tokenizers import CharTokenizer
from tests.tiny import tiny_module, write_checkpoint

MISSING = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
needs_web = pytest.mark.skipif(
    bool(MISSING), reason=f"the serve extra is not installed ({', '.join(MISSING)} missing): "
                          'pip install -e ".[serve-test]"')
TEXT = "once upon a time the king said hello.\n"
CORPORA = ["tinystories", "shakespeare", "kjv"]


def write_ckpt(path, cls, corpora: list[str] | None = None, **config) -> str:
    """An untrained tiny module with a char tokenizer, saved as `python -m succu.fit` saves one
    (plus the datamodule's corpora, which name the ends of the dial)."""
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts([TEXT])
    module = tiny_module(cls, vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                         n_embd=16, **config)
    return write_checkpoint(path, module, tok, corpora)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serve")
    return {
        "gated": write_ckpt(root / "gated.ckpt", GatedGPTModule, CORPORA[:2]),
        "k3": write_ckpt(root / "k3.ckpt", GatedGPTModule, CORPORA, n_sources=3,
                         eval_alphas=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
        "gpt": write_ckpt(root / "gpt.ckpt", GPTModule),
    }


@pytest.fixture(scope="module")
def served(ckpts) -> dict[str, Served]:
    return {name: Served.load(path) for name, path in ckpts.items()}


def reference(served: Served, prompt: str, length: int, seed: int, temperature: float = 0.8,
              top_p: float | None = None, **dial) -> str:
    """What one stream must send: the module's own `stream` with a generator of the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return "".join(served.module.stream(prompt, length, temperature=temperature, top_p=top_p,
                                        generator=generator, **dial))


def parse_sse(lines) -> list[tuple[str, dict]]:
    """(event, data) pairs of a text/event-stream body (keep-alive comments skipped)."""
    events, name, data = [], "message", []
    for line in lines:
        if line == "":
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return events


# ---- request checks (no web needed) -----------------------------------------------------------
def test_requests_are_checked_and_described(served):
    gated, k3, gpt = served["gated"], served["k3"], served["gpt"]
    req = gated.parse({"prompt": "once", "alpha": "1", "temperature": "0.5", "max_new_tokens": "7"})
    assert (req.alpha, req.temperature, req.max_new_tokens, req.seed) == (1.0, 0.5, 7, 0)
    assert req.top_p == 1.0 and gated.parse({"prompt": "once", "top_p": "0.9"}).top_p == 0.9
    assert gated.describe(req)["label"] == "alpha = 1 (tinystories 0.00 · shakespeare 1.00)"
    assert gated.parse({"prompt": "once"}).alpha == 0.5  # the middle when none is given
    assert gated.parse({"prompt": "once", "alpha": "0.75,0.25"}).alpha == 0.25  # shares (1-a, a)
    req = k3.parse({"prompt": "once", "alpha": "0.2,0.3,0.5"})
    assert req.alpha == (0.2, 0.3, 0.5)
    assert k3.describe(req)["label"] == ("alpha = 0.2,0.3,0.5 "
                                         "(tinystories 0.20 · shakespeare 0.30 · kjv 0.50)")
    assert gpt.parse({"prompt": "once"}).alpha is None
    assert gpt.describe(gpt.parse({"prompt": "once"}))["label"] == "no dial"
    info = k3.info()
    assert (info["k"], info["corpora"], info["centre"], info["kv_cache"]) == (
        3, CORPORA, "0.333333,0.333333,0.333333", True)
    assert gpt.info()["k"] == 0 and gpt.info()["model"] == "GPT"


BAD = [
    ("gated", {"alpha": "1.5"}, "alpha must be in [0, 1], got 1.5"),
    ("gated", {"alpha": "nan"}, "alpha must be in [0, 1], got nan"),
    ("gated", {"alpha": "left"}, "alpha 'left' must be a number in [0, 1]"),
    ("k3", {"alpha": "0.5"}, "alpha 0.5 is one number, but this dial spans 3 sources"),
    ("k3", {"alpha": "0.2,0.2,0.2"}, "alpha must be 3 non-negative shares summing to 1"),
    ("k3", {"alpha": "1.2,-0.2,0"}, "got 1.2,-0.2,0 (sum 1)"),
    ("gpt", {"alpha": "0.5"}, "alpha needs a gated model; this checkpoint holds GPT"),
    ("gated", {"temperature": "0"}, "temperature must be > 0, got 0"),
    ("gated", {"temperature": "-1"}, "temperature must be > 0, got -1"),
    ("gated", {"temperature": "hot"}, "temperature must be a number, got 'hot'"),
    ("gated", {"top_p": "0"}, "top_p must be in (0, 1], got 0"),
    ("gated", {"top_p": "1.5"}, "top_p must be in (0, 1], got 1.5"),
    ("gated", {"top_p": "most"}, "top_p must be a number, got 'most'"),
    ("gated", {"max_new_tokens": str(MAX_NEW_TOKENS + 1)},
     f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS} on this page, got {MAX_NEW_TOKENS + 1}"),
    ("gated", {"max_new_tokens": "1e20"}, "max_new_tokens must be a whole number, got '1e20'"),
    ("gated", {"max_new_tokens": "0"}, "max_new_tokens must be between 1 and"),
    ("gated", {"seed": "-3"}, "seed must be between 0 and 2^63 - 1, got -3"),
    ("gated", {"prompt": "  "}, "the prompt is empty"),
    ("gated", {"prompt": "Zoë"}, "the prompt has 2 characters the checkpoint's vocabulary lacks: 'Z' x1, 'ë' x1"),
    ("gated", {"prompt": "a" * 4001}, "the prompt has 4001 characters; at most 4000"),
]


@pytest.mark.parametrize(("which", "params", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_requests_are_one_line_naming_the_value(served, which, params, message):
    with pytest.raises(ValueError) as err:
        served[which].parse({"prompt": "once", **params})
    assert message in str(err.value) and "\n" not in str(err.value)


# ---- the web side ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clients(served):
    if MISSING:
        pytest.skip(f"the serve extra is not installed ({', '.join(MISSING)} missing)")
    from fastapi.testclient import TestClient

    from succu.serve.app import make_app

    return {name: TestClient(make_app(s)) for name, s in served.items()}


def stream_events(client, **params) -> list[tuple[str, dict]]:
    with client.stream("GET", "/stream", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.iter_lines())


@needs_web
def test_the_page_and_its_description_are_served(clients):
    page = clients["gpt"].get("/")
    assert page.status_code == 200 and 'id="prompt"' in page.text and "/page.js" in page.text
    script = clients["gpt"].get("/page.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert clients["gpt"].get("/info").json()["k"] == 0
    assert clients["gated"].get("/info").json()["corpora"] == CORPORA[:2]


@needs_web
@pytest.mark.parametrize("which", ["gated", "k3", "gpt"])
def test_a_stream_sends_its_position_then_tokens_then_done(clients, served, which):
    dial = {"gated": "1", "k3": "0,0,1", "gpt": None}[which]
    params = {"prompt": "the king", "max_new_tokens": 24, "seed": 5, "temperature": 0.8}
    events = stream_events(clients[which], **params, **({"alpha": dial} if dial else {}))
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"token"}
    assert len(names) > 3  # the text comes in pieces, as it is generated
    start, done = events[0][1], events[-1][1]
    assert start["alpha"] == dial and done["alpha"] == dial and start["seed"] == 5
    text = "".join(data["text"] for name, data in events if name == "token")
    position = {} if dial is None else {"alpha": served[which].check_alpha(dial)}
    assert text == reference(served[which], "the king", 24, 5, **position)
    assert done["chars"] == len(text)
    nucleus = stream_events(clients[which], **params, top_p=0.6, **({"alpha": dial} if dial else {}))
    assert nucleus[0][1]["top_p"] == 0.6
    text = "".join(data["text"] for name, data in nucleus if name == "token")
    assert text == reference(served[which], "the king", 24, 5, top_p=0.6, **position)


@needs_web
@pytest.mark.parametrize(("which", "params", "message"), BAD[::3], ids=[m[:40] for _, _, m in BAD[::3]])
def test_bad_input_is_one_error_event_and_the_server_goes_on(clients, which, params, message):
    events = stream_events(clients[which], **{"prompt": "once", **params})
    assert len(events) == 1 and events[0][0] == "error"
    assert message in events[0][1]["message"] and "\n" not in events[0][1]["message"]
    assert stream_events(clients[which], prompt="once", max_new_tokens=3)[-1][0] == "done"


@pytest.fixture(scope="module")
def live(served):
    """The gated checkpoint served by uvicorn on a free port, as `python -m succu.serve` does."""
    if MISSING:
        pytest.skip(f"the serve extra is not installed ({', '.join(MISSING)} missing)")
    from succu.serve.app import local_server

    with local_server(served["gated"]) as url:
        yield url, served["gated"]


@needs_web
def test_concurrent_streams_each_get_their_own_text(live):
    import httpx

    url, served = live
    served.peak = 0
    asks = [dict(alpha="0", seed=1), dict(alpha="1", seed=2)]
    results: dict[int, list] = {}
    barrier = threading.Barrier(len(asks))

    def read(i: int) -> None:
        params = {"prompt": "once upon", "max_new_tokens": 300, **asks[i]}
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            with client.stream("GET", f"{url}/stream", params=params) as response:
                results[i] = parse_sse(response.iter_lines())

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    # The server answers other requests while the streams generate.
    assert httpx.get(f"{url}/info", timeout=10).json()["k"] == 2
    for t in threads:
        t.join(timeout=120)
    assert served.peak >= 2  # the streams really ran at the same time
    for i, ask in enumerate(asks):
        events = results[i]
        text = "".join(d["text"] for name, d in events if name == "token")
        assert events[0][1]["alpha"] == ask["alpha"] and events[-1][0] == "done"
        assert text == reference(served, "once upon", 300, ask["seed"], alpha=float(ask["alpha"]))
    assert served.active == 0


@needs_web
def test_a_stream_whose_page_goes_away_stops_generating(live, monkeypatch):
    """Moving the dial closes the page's stream: its worker must stop, not run to the end."""
    import httpx

    from succu.serve import app

    url, served = live
    workers: list[streams.TokenStream] = []

    class Recorded(streams.TokenStream):
        def __init__(self, *args):
            super().__init__(*args)
            workers.append(self)

    def slow(prompt, max_new_tokens, **kwargs):  # ~20 s to the end if nothing stops it
        for _ in range(max_new_tokens):
            time.sleep(0.01)
            yield "x"

    monkeypatch.setattr(app, "TokenStream", Recorded)
    monkeypatch.setattr(served.module, "stream", slow)
    with httpx.Client(timeout=30) as client:
        params = {"prompt": "once", "max_new_tokens": MAX_NEW_TOKENS}
        with client.stream("GET", f"{url}/stream", params=params) as response:
            lines = response.iter_lines()
            assert [name for name, _ in parse_sse(take_events(lines, 3))] == ["start", "token", "token"]
    workers[0].thread.join(timeout=5)
    assert not workers[0].thread.is_alive() and workers[0].stopped.is_set()
    deadline = time.monotonic() + 5
    while served.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served.active == 0


def take_events(lines, n: int) -> list[str]:
    """The first n events' lines of an open stream (then the caller hangs up)."""
    out, seen = [], 0
    for line in lines:
        out.append(line)
        seen += line == ""
        if seen == n:
            return out
    return out


@needs_web
def test_too_many_streams_are_refused_with_a_message(clients, served, monkeypatch):
    gated = served["gated"]
    monkeypatch.setattr(gated, "slots", threading.BoundedSemaphore(1))
    gated.slots.acquire()  # one stream already running
    events = stream_events(clients["gated"], prompt="once")
    assert events[0][0] == "error" and "streams are already running" in events[0][1]["message"]


# ---- the command line -----------------------------------------------------------------------
def test_the_core_install_does_not_import_the_extra():
    """The command, its package and the stream core import no extra at module level: a core
    install can import them and run `--help` (the extras are imported inside functions)."""
    extras = {"fastapi", "uvicorn", "starlette", "selenium", "httpx"}
    for name in ("__init__", "__main__", "streams"):
        tree = ast.parse(Path(streams.__file__).with_name(f"{name}.py").read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        roots = {(a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
                 for n in top for a in n.names}
        assert not roots & extras, (name, roots & extras)


def test_a_missing_extra_is_one_line_naming_the_install(ckpts, monkeypatch, capsys):
    from succu.serve.__main__ import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # `import fastapi` now fails
    with pytest.raises(SystemExit) as exc:
        main(["--ckpt", ckpts["gated"]])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.count("\n") == 0
    assert err == ('error: python -m succu.serve needs the serve extra (fastapi is not installed): '
                   'pip install -e ".[serve]"')


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
])
def test_bad_command_lines_are_one_line(ckpts, capsys, args, message):
    from succu.serve.__main__ import main

    with pytest.raises(SystemExit):
        main(["--ckpt", ckpts["gated"], *args])
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_screenshot_positions_default_to_the_ends_and_are_checked(capsys):
    from succu.serve.__main__ import shot_positions

    assert shot_positions(None, 2) == ["0", "1"] and shot_positions(None, 3) == ["1,0,0", "0,0,1"]
    assert shot_positions("0.25", 2) == ["0.25"] and shot_positions(None, 0) == []
    assert shot_positions(" 1,0,0 ; 0.5,0.5,0", 3) == ["1,0,0", "0.5,0.5,0"]
    with pytest.raises(ValueError, match="alpha must be in"):
        shot_positions("0;1.5", 2)
    with pytest.raises(SystemExit):
        shot_positions("0;0.5;1", 2)
    assert "--compare takes one or two ';'-separated dial positions" in capsys.readouterr().err


@needs_web
def test_a_busy_port_is_one_line(ckpts, live, capsys):
    from succu.serve.__main__ import main

    port = live[0].rsplit(":", 1)[1]
    with pytest.raises(SystemExit):
        main(["--ckpt", ckpts["gated"], "--port", port])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and "\n" not in err
