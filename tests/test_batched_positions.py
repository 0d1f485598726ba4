"""Several dial positions in one forward pass per token (`succu.dial_streams`): each position's
text is what that position streams alone with a generator of the same seed.

Checked for the page's side-by-side panes (`/panes`), `python -m succu.generate --alpha_sweep` and
the voice meter, on tiny untrained GatedGPTs over two and three sources, sampling with a
temperature (and top-k, top-p), past the block size (where the window slides), and with an EOS
in the vocabulary so that positions end apart.
"""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest
import torch

from succu import generate
from succu.analysis import voice
from succu.contracts import CapabilityError
from succu.dial_streams import stream_positions
from succu.modules.gated_gpt import GatedGPTModule
from succu.modules.gpt import GPTModule
from succu.serve import streams
from succu.serve.streams import Served
from succu.tokenizers import CharTokenizer
from tests.tiny import tiny_module, write_checkpoint

MISSING = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
needs_web = pytest.mark.skipif(bool(MISSING), reason=f"the serve extra is not installed "
                               f"({', '.join(MISSING)} missing): pip install -e \".[serve-test]\"")
TEXT = "once upon a time the king said hello.\n"
CORPORA = ["tinystories", "shakespeare", "kjv"]
# Each dial's positions: both ends of two sources; two corners and the centre of three.
POSITIONS = {2: [0.0, 1.0], 3: [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1 / 3, 1 / 3, 1 / 3)]}
SAMPLING = [dict(temperature=0.8), dict(temperature=1.3, top_k=6), dict(temperature=0.8, top_p=0.7),
            dict(temperature=1.0, top_k=8, top_p=0.9)]


def tiny(k: int = 2, cls=GatedGPTModule, seed: int = 0):
    """An untrained tiny module (block 16) with a char vocabulary holding <EOS>."""
    torch.manual_seed(seed)
    tok = CharTokenizer.from_texts([TEXT], ["<EOS>"])
    dial = {"n_sources": k, "eval_alphas": POSITIONS[k]} if cls is GatedGPTModule else {}
    module = tiny_module(cls, vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2,
                         n_embd=16, **dial).eval()
    module.tokenizer = tok
    return module


@pytest.fixture(scope="module")
def modules():
    return {2: tiny(2), 3: tiny(3)}


def alone(module, prompt: str, length: int, seed: int, alpha, **sampling) -> tuple[str, torch.Tensor]:
    """What one position streams by itself, and where its generator ends."""
    generator = torch.Generator().manual_seed(seed)
    text = "".join(module.stream(prompt, length, generator=generator, alpha=alpha, **sampling))
    return text, generator.get_state()


def together(module, prompt: str, length: int, seed: int, positions, **sampling):
    """Each position's text from one batch, the order in which positions ended, the generators."""
    generators = [torch.Generator().manual_seed(seed) for _ in positions]
    texts, ended = [""] * len(positions), []
    for p, piece in stream_positions(module, prompt, positions, length, generators=generators,
                                     **sampling):
        assert p not in ended  # nothing of a position after its end
        if piece is None:
            ended.append(p)
        else:
            texts[p] += piece
    assert sorted(ended) == list(range(len(positions)))
    return texts, ended, generators


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("sampling", SAMPLING, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_positions_in_one_batch_stream_what_each_streams_alone(modules, k, sampling):
    module, positions = modules[k], POSITIONS[k]
    lengths = set()
    for seed in range(6):
        texts, _, generators = together(module, "the king", 40, seed, positions, **sampling)
        for p, alpha in enumerate(positions):
            text, state = alone(module, "the king", 40, seed, alpha, **sampling)
            assert texts[p] == text, (seed, alpha)
            # The generator ends where the lone stream's does, though the batch went on.
            assert torch.equal(generators[p].get_state(), state)
            lengths.add(len(text))
    assert max(lengths) > 16 and min(lengths) < 40  # the window slid (block 16); an EOS ended one


def test_a_position_that_ends_first_says_so_first_and_the_others_go_on(modules):
    module = modules[2]
    for seed in range(32):
        texts, ended, _ = together(module, "the king", 60, seed, [0.0, 1.0], temperature=0.8)
        if len(texts[0]) != len(texts[1]):
            break
    else:
        pytest.fail("no seed below 32 ends the two positions apart")
    first = min((0, 1), key=lambda p: len(texts[p]))
    assert ended == [first, 1 - first]
    assert texts == [alone(module, "the king", 60, seed, a, temperature=0.8)[0] for a in (0.0, 1.0)]


def test_max_new_tokens_ends_every_position(modules):
    texts, ended, _ = together(modules[3], "the king", 3, 1, POSITIONS[3], temperature=0.8)
    assert all(len(t) <= 3 for t in texts) and sorted(ended) == [0, 1, 2]
    assert together(modules[2], "the king", 0, 1, [0.0, 1.0])[0] == ["", ""]


def test_a_model_without_a_dial_is_refused():
    gpt = tiny(cls=GPTModule)
    with pytest.raises(CapabilityError, match="several dial positions at once needs a model with a dial"):
        list(stream_positions(gpt, "the king", [0.0, 1.0], 5, generators=[torch.Generator()] * 2))


def test_one_generator_per_position():
    with pytest.raises(ValueError, match="one sampling generator per dial position: 2 positions, 1"):
        list(stream_positions(tiny(), "the king", [0.0, 1.0], 5, generators=[torch.Generator()]))


# ---- the voice meter --------------------------------------------------------------------------
@pytest.mark.parametrize("rows", [voice.MAX_ROWS, 5])
def test_the_voice_meter_samples_positions_together_as_each_alone(modules, monkeypatch, rows):
    """Rows of several positions per batch, or (5 rows: fewer than two positions' batch) one
    position at a time for the widest batch: the texts are each position's own."""
    monkeypatch.setattr(voice, "MAX_ROWS", rows)
    for k in (2, 3):
        texts = voice.samples(modules[k], POSITIONS[k], 6, length=24, seed=3)
        assert texts == [voice.continuations(modules[k], a, 6, length=24, seed=3) for a in POSITIONS[k]]


# ---- generate --alpha_sweep -------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3])
def test_generate_alpha_sweep_prints_what_each_alpha_prints(tmp_path, capsys, k):
    ckpt = write_checkpoint(tmp_path / "gated.ckpt", tiny(k), tiny(k).tokenizer, CORPORA[:k])
    args = ["--ckpt", ckpt, "--prompt", "the king", "--prompt", "once", "--max_new_tokens", "30",
            "--temperature", "0.9", "--top_k", "10", "--seed", "4"]
    texts = generate.main([*args, "--alpha_sweep"])
    swept = capsys.readouterr().out
    one_by_one, printed = [], ""
    for alpha in generate.sweep_positions(k):
        shown = repr(alpha) if k == 2 else ",".join(map(repr, alpha))
        one_by_one += generate.main([*args, "--alpha", shown])
        printed += capsys.readouterr().out
    assert texts == one_by_one and swept == printed
    assert len(texts) == 2 * len(generate.sweep_positions(k)) and len(set(texts)) > 2


# ---- the page: /panes -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("panes")
    ckpts = {k: write_checkpoint(root / f"k{k}.ckpt", tiny(k), tiny(k).tokenizer, CORPORA[:k])
             for k in (2, 3)}
    ckpts["gpt"] = write_checkpoint(root / "gpt.ckpt", tiny(cls=GPTModule), tiny().tokenizer)
    return {name: Served.load(path) for name, path in ckpts.items()}


@pytest.fixture(scope="module")
def clients(served):
    if MISSING:
        pytest.skip(f"the serve extra is not installed ({', '.join(MISSING)} missing)")
    from fastapi.testclient import TestClient

    from succu.serve.app import make_app

    return {name: TestClient(make_app(s)) for name, s in served.items()}


def sse(client, route: str, **params) -> list[tuple[str, dict]]:
    from tests.test_serve import parse_sse

    with client.stream("GET", route, params=params) as response:
        assert response.status_code == 200
        return parse_sse(response.iter_lines())


@needs_web
@pytest.mark.parametrize(("k", "alpha"), [(2, "0;1"), (3, "1,0,0;0,0,1")])
@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_side_by_side_panes_stream_what_each_pane_streams_alone(clients, k, alpha, top_p):
    params = {"prompt": "the king", "max_new_tokens": 40, "seed": 0, "temperature": 0.8,
              "top_p": top_p}
    streamed = 0
    for seed in range(3):
        events = sse(clients[k], "/panes", **{**params, "seed": seed}, alpha=alpha)
        names = [name for name, _ in events]
        assert names[:2] == ["start", "start"] and names.count("done") == 2 and names[-1] == "done"
        assert set(names[2:]) <= {"token", "done"}
        streamed += names.count("token")
        for pane, position in enumerate(alpha.split(";")):
            start = events[pane][1]
            assert (start["pane"], start["alpha"], start["seed"]) == (pane, position, seed)
            text = "".join(d["text"] for name, d in events if name == "token" and d["pane"] == pane)
            done = [d for name, d in events if name == "done" and d["pane"] == pane]
            assert len(done) == 1 and done[0]["chars"] == len(text) and done[0]["alpha"] == position
            single = sse(clients[k], "/stream", **{**params, "seed": seed}, alpha=position)
            assert text == "".join(d["text"] for name, d in single if name == "token")
    assert streamed > 20


@needs_web
def test_panes_are_refused_in_one_line_without_a_dial_or_with_a_bad_position(clients):
    events = sse(clients["gpt"], "/panes", prompt="once", alpha="0;1")
    assert events == [("error", {"message": "side by side needs a gated model; this checkpoint "
                                            "holds GPT, which has no dial"})]
    for alpha, message in [("0;1.5", "alpha must be in [0, 1], got 1.5"),
                           ("0;", "alpha must be 1 to 4 dial positions separated by ';'"),
                           ("0;1;0;1;0", "alpha must be 1 to 4 dial positions")]:
        events = sse(clients[2], "/panes", prompt="once", alpha=alpha)
        assert len(events) == 1 and events[0][0] == "error" and message in events[0][1]["message"]
    assert sse(clients[2], "/panes", prompt="once", alpha="0.5", max_new_tokens=3)[-1][0] == "done"


@needs_web
def test_side_by_side_whose_page_goes_away_stops_both_panes(served, monkeypatch):
    """Closing the page's shared stream stops its worker: neither pane runs to the end."""
    import httpx

    from succu.serve import app
    from succu.serve.app import local_server
    from tests.test_serve import parse_sse, take_events

    gated = served[2]
    workers: list[streams.PanesStream] = []

    class Recorded(streams.PanesStream):
        def __init__(self, *args):
            super().__init__(*args)
            workers.append(self)

    def slow(module, prompt, positions, max_new_tokens, **kwargs):  # ~40 s if nothing stops it
        for _ in range(max_new_tokens):
            time.sleep(0.01)
            for p in range(len(positions)):
                yield p, "x"

    monkeypatch.setattr(app, "PanesStream", Recorded)
    monkeypatch.setattr(streams, "stream_positions", slow)
    with local_server(gated) as url, httpx.Client(timeout=30) as client:
        params = {"prompt": "once", "alpha": "0;1", "max_new_tokens": streams.MAX_NEW_TOKENS}
        with client.stream("GET", f"{url}/panes", params=params) as response:
            events = parse_sse(take_events(response.iter_lines(), 4))
        assert [(name, d["pane"]) for name, d in events] == [("start", 0), ("start", 1),
                                                            ("token", 0), ("token", 1)]
        workers[0].thread.join(timeout=5)
        assert not workers[0].thread.is_alive() and workers[0].stopped.is_set()
        deadline = time.monotonic() + 5
        while gated.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gated.active == 0


@needs_web
def test_a_side_by_side_stream_takes_one_stream_slot(clients, served, monkeypatch):
    gated = served[2]
    monkeypatch.setattr(gated, "slots", threading.BoundedSemaphore(1))
    gated.slots.acquire()  # one stream already running
    events = sse(clients[2], "/panes", prompt="once", alpha="0;1")
    assert events[0][0] == "error" and "streams are already running" in events[0][1]["message"]


# ---- the page in a browser --------------------------------------------------------------------
@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A tiny GatedGPT without an end-of-text token (every stream runs its whole length) served
    from a thread, its streams paced so that a browser can watch them: (url, Served, the lone
    texts at alpha 0, 0.5 and 1)."""
    from succu.serve.app import local_server
    from succu.serve.browser import browser_problem

    problem = "the serve extra is not installed" if MISSING else browser_problem()
    if problem:
        pytest.skip(f"no browser test: {problem}")
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts([TEXT])
    module = tiny_module(GatedGPTModule, vocab_size=tok.vocab_size, block_size=16, n_layer=1,
                         n_head=2, n_embd=16)
    served = Served.load(write_checkpoint(tmp_path_factory.mktemp("page") / "gated.ckpt", module,
                                          tok, CORPORA[:2]))
    texts = {a: alone(served.module, "the king ", 60, 0, a, temperature=0.8)[0] for a in (0.0, 0.5, 1.0)}
    with pytest.MonkeyPatch.context() as patch:
        stream, batched = served.module.stream, streams.stream_positions

        def paced_stream(*args, **kwargs):
            for piece in stream(*args, **kwargs):
                time.sleep(0.03)
                yield piece

        def paced_positions(*args, **kwargs):
            for p, piece in batched(*args, **kwargs):
                time.sleep(0.015)
                yield p, piece

        patch.setattr(served.module, "stream", paced_stream)
        patch.setattr(streams, "stream_positions", paced_positions)
        with local_server(served) as url:
            yield url, served, texts


def test_side_by_side_in_the_browser_is_one_stream_and_a_moved_pane_leaves_it(page):
    from succu.serve.browser import chromium, open_page, pane_state, wait_for

    url, served, texts = page
    with chromium(1400, 900) as driver:
        open_page(driver, url)
        for name, value in (("prompt", "the king "), ("length", "60"), ("seed", "0")):
            field = driver.find_element("id", name)
            field.clear()
            field.send_keys(value)
        driver.find_element("id", "compare").click()
        for pane, position in (("a", "0"), ("b", "1")):
            driver.execute_script("window.succuPage.setPosition(arguments[0], arguments[1])", pane,
                                  position)
        driver.find_element("id", "go").click()

        def shown(pane: str) -> str:
            return driver.find_element("id", f"out-{pane}").get_attribute("textContent")

        wait_for(driver, lambda d: len(shown("a")) >= 3 and len(shown("b")) >= 3, 20,
                 "the panes did not stream")
        assert served.active == 1  # both panes from one stream, one worker
        assert texts[0.0].startswith(shown("a")) and texts[1.0].startswith(shown("b"))
        # Pane a's dial moves while both stream: a gets a stream of its own, b goes on.
        driver.execute_script("window.succuPage.setPosition('a', '0.5')")
        wait_for(driver, lambda d: d.find_element("id", "used-a").text.startswith("alpha = 0.5 "),
                 20, "pane a did not restart at alpha = 0.5")
        assert pane_state(driver, "b") == "streaming" and len(shown("b")) < 60
        wait_for(driver, lambda d: all(pane_state(d, p) == "done" for p in "ab"), 60,
                 "the panes did not finish")
        assert shown("b") == texts[1.0] and shown("a") == texts[0.5]
        assert driver.find_element("id", "used-a").text.startswith("alpha = 0.5 ")
        assert driver.find_element("id", "status-b").text.startswith("done: 60 characters")
        assert driver.find_element("id", "error").text == ""
    deadline = time.monotonic() + 5
    while served.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.active == 0
