"""The dial server answers only requests addressed to it (the Host header names the address it
serves: DNS rebinding refused) and serves no OpenAPI pages; a bad temperature is the same line on
the page as in `succu.generate`. Needs the serve extra and httpx (`serve-test`), else skips."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from succu.modules.gpt import GPTModule
from succu.serve.streams import Served
from succu.tokenizers import CharTokenizer
from tests.tiny import tiny_module, write_checkpoint

MISSING = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"the serve extra is not installed "
                                f"({', '.join(MISSING)} missing): pip install -e \".[serve-test]\"")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(["once upon a time the king said hello.\n"])
    module = tiny_module(GPTModule, vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2,
                         n_embd=16)
    return Served.load(write_checkpoint(tmp_path_factory.mktemp("guard") / "gpt.ckpt", module, tok))


@pytest.fixture(scope="module")
def url(served):
    from succu.serve.app import local_server

    with local_server(served) as url:
        yield url


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}",
                                  "LOCALHOST:{port}"])
def test_the_served_address_is_answered(url, host):
    import httpx

    port = url.rsplit(":", 1)[1]
    answer = httpx.get(f"{url}/info", headers={"Host": host.format(port=port)}, timeout=10)
    assert answer.status_code == 200 and answer.json()["model"] == "GPT"


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1.nip.io:{port}", "127.0.0.1:1",
                                  "localhost", "10.0.0.5:{port}", ""])
def test_another_host_header_is_refused(url, host):
    """A rebinding page's requests carry its own domain; another port or none is refused too."""
    import httpx

    port = url.rsplit(":", 1)[1]
    header = host.format(port=port)
    for path in ("/", "/info", "/stream?prompt=once"):
        answer = httpx.get(f"{url}{path}", headers={"Host": header}, timeout=10)
        assert answer.status_code == 421, (path, header)
        assert answer.text == (f"this page answers only at 127.0.0.1:{port} or [::1]:{port} or "
                               f"localhost:{port}, not at Host {header!r}\n")


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
def test_no_openapi_pages(url, path):
    import httpx

    assert httpx.get(f"{url}{path}", timeout=10).status_code == 404


def test_a_wildcard_bind_answers_ip_literals_but_not_names():
    from succu.serve.app import HostCheck

    check = HostCheck("0.0.0.0", 8000)
    assert [check.allows(h) for h in ("192.168.1.5:8000", "[fe80::1]:8000", "localhost:8000")] == [True] * 3
    assert [check.allows(h) for h in ("evil.example:8000", "192.168.1.5:8001", "192.168.1.5")] == [False] * 3
    named = HostCheck("box.lan", 80)
    assert named.allows("box.lan") and named.allows("box.lan:80") and not named.allows("other.lan")


def test_the_pages_temperature_error_is_generates_line(url):
    """1e-308 is > 0, but float32 makes it 0: the page's error event says so, not torch."""
    import httpx

    from succu.sampling import check_temperature

    with pytest.raises(ValueError) as expected:
        check_temperature(1e-308)
    with httpx.stream("GET", f"{url}/stream", params={"prompt": "once", "temperature": "1e-308"},
                      timeout=30) as answer:
        lines = list(answer.iter_lines())
    events = [(lines[i][6:].strip(), json.loads(lines[i + 1][5:])) for i in range(len(lines) - 1)
              if lines[i].startswith("event:")]
    assert events == [("error", {"message": str(expected.value)})]
