"""The dial page in a real browser: headless Chromium driven by Selenium.

A tiny GatedGPT is trained for a few steps through `python -m succu.fit` (configs/abcgpt_char.yaml
at toy size), served on a free port from a thread, and the page is used as a person would: type a
prompt, put the slider at 0, generate, then move it to 1 while the text streams. The test checks
that text streams in (in many pieces), that the stream restarts at the new position and that the
page shows the position each stream used. A PNG screenshot is written under the test's tmp_path,
and copied to $SUCCU_TEST_ARTIFACTS when that is set. Skips, saying why, without the serve extra,
Selenium, Chromium or chromedriver (`.ci/run` installs the last two with apt-get).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from succu.serve.browser import browser_problem
from tests.ddp_probe import gated_args

MISSING = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
PROBLEM = (f"the serve extra is not installed ({', '.join(MISSING)} missing): "
           'pip install -e ".[serve-test]"') if MISSING else browser_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"no browser test: {PROBLEM}")


PROMPT, LENGTH = "the king ", 60


@pytest.fixture(scope="module")
def page(tmp_path_factory, cache):
    """The page of a GatedGPT trained for 4 steps, served from a thread: (url, Served, seed,
    the texts that seed must give at alpha 0 and 1)."""
    from succu import fit
    from succu.serve.app import local_server
    from succu.serve.streams import Served

    root = tmp_path_factory.mktemp("abcgpt")
    cli = fit.main(gated_args(root, cache, steps=4, val_every=4))
    served = Served.load(cli.trainer.checkpoint_callback.best_model_path)
    seed = unbroken_seed(served)
    texts = {alpha: continuation(served, seed, alpha) for alpha in (0.0, 1.0)}
    pace(served)
    with local_server(served) as url:
        yield url, served, seed, texts


def continuation(served, seed: int, alpha: float) -> str:
    generator = torch.Generator().manual_seed(seed)
    return "".join(served.module.stream(PROMPT, LENGTH, temperature=0.8, generator=generator,
                                        alpha=alpha))


def unbroken_seed(served) -> int:
    """A seed whose continuation of PROMPT at alpha = 0 runs all LENGTH characters: a model
    trained for 4 steps draws its end-of-text token every few dozen characters, which would end
    the stream before the test could watch it."""
    for seed in range(64):
        if len(continuation(served, seed, 0.0)) == LENGTH:  # a character per token: no end of text
            return seed
    pytest.fail(f"no seed below 64 continues {PROMPT!r} for {LENGTH} characters")


def pace(served, seconds: float = 0.02) -> None:
    """Slow the stream to a pace Selenium can watch (a toy model finishes within a frame)."""
    stream = served.module.stream

    def paced(*args, **kwargs):
        for piece in stream(*args, **kwargs):
            time.sleep(seconds)
            yield piece

    served.module.stream = paced


@pytest.fixture(scope="module")
def driver():
    """One headless Chromium for the module's tests (starting one takes seconds)."""
    from succu.serve.browser import chromium

    with chromium(1100, 800) as browser:
        yield browser


def keep(png: Path) -> Path:
    """Copy a screenshot to $SUCCU_TEST_ARTIFACTS (when set), where CI collects artefacts."""
    folder = os.environ.get("SUCCU_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(folder) / png.name)
    return png


def text_of(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def test_the_slider_streams_text_and_the_page_shows_the_position_used(page, driver, tmp_path):
    from selenium.webdriver.common.keys import Keys

    from succu.serve.browser import open_page, pane_state, save_page, wait_for

    url, served, seed, texts = page
    open_page(driver, url)
    assert "GatedGPT" in text_of(driver, "model") and "KV cache" in text_of(driver, "model")
    prompt = driver.find_element("id", "prompt")
    prompt.clear()
    prompt.send_keys(PROMPT)
    for name, value in (("length", str(LENGTH)), ("seed", str(seed))):
        field = driver.find_element("id", name)
        field.clear()
        field.send_keys(value)
    slider = driver.find_element("id", "alpha-a")
    slider.send_keys(Keys.HOME)  # the slider's keyboard: Home is its minimum, alpha = 0
    assert text_of(driver, "readout-a") == "0"
    driver.find_element("id", "go").click()

    # Text streams in, in pieces, and the pane says which position this stream used.
    wait_for(driver, lambda d: len(text_of(d, "out-a")) >= 5, 20, "no text streamed in")
    assert text_of(driver, "used-a") == "alpha = 0 (tinystories 1.00 · shakespeare 0.00)"
    shown = driver.find_element("id", "out-a").get_attribute("textContent")
    assert pane_state(driver, "a") == "streaming"  # text shown before the stream ended
    assert texts[0.0].startswith(shown) and len(shown) < LENGTH

    slider.send_keys(Keys.END)  # move the dial to 1 while it streams: the stream restarts
    assert text_of(driver, "readout-a") == "1"
    wait_for(driver, lambda d: text_of(d, "used-a").startswith("alpha = 1 "), 20,
             "the stream did not restart at alpha = 1")
    wait_for(driver, lambda d: pane_state(d, "a") == "done", 60, "the stream did not finish")
    assert text_of(driver, "used-a") == "alpha = 1 (tinystories 0.00 · shakespeare 1.00)"
    status = text_of(driver, "status-a")
    assert status.endswith("at alpha = 1") and status.startswith("done: ")
    out = driver.find_element("id", "out-a").get_attribute("textContent")
    assert out == texts[1.0] and int(status.split()[1]) == len(out)  # the new stream alone
    assert text_of(driver, "error") == ""
    png = tmp_path / "serve_page.png"
    save_page(driver, png)
    keep(png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    deadline = time.monotonic() + 5  # the stream left behind at alpha = 0 stops too
    while served.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.active == 0


def test_side_by_side_screenshot_at_both_ends(page, driver, tmp_path):
    """What `python -m succu.serve --ckpt CKPT --screenshot out.png` writes: both ends side by
    side, each pane saying its position (`capture` checks it)."""
    from succu.serve.browser import capture

    url, _, seed, _ = page
    settings = {"temperature": "0.8", "length": str(LENGTH), "seed": str(seed)}
    png = keep(capture(driver, url, tmp_path / "serve_compare.png", "once upon a time", ["0", "1"],
                       settings))
    assert png.read_bytes()[:4] == b"\x89PNG"
