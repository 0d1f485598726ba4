"""`python -m succu.serve --ckpt PATH`: turn a checkpoint's dial by hand in a local web page.

The page (static/index.html, plain HTML and JavaScript, no build step) has a prompt box,
temperature, length and seed controls and, for a gated model, the dial: a slider for alpha over two
sources, a point on a triangle (and K linked share inputs) over three, K linked share inputs over
more. Generate streams the continuation token by token; moving the dial while it streams (or after)
starts it again at the new position with the same seed, so that only the dial changes. Side by side
runs the same prompt at two dial positions as one stream (`/panes`): one row per pane in one
batch, one forward pass per token for both, each pane's text what its position streams alone;
moving one pane's dial gives that pane a stream of its own and the other goes on. Every stream
shows the position the server used. Checkpoints without a dial get the same page without one.
Each stream runs on its own worker thread with its own seeded generators and KV cache; a bad value (alpha off the dial, temperature
<= 0, more than 2000 new tokens, an empty prompt, characters the vocabulary lacks) is one line on
the page, and at most 16 streams run at once (`streams.MAX_NEW_TOKENS`, `streams.MAX_STREAMS`).
The server answers only requests whose Host header names the address it serves (421 otherwise: a
page whose domain resolves to this machine cannot reach it) and has no OpenAPI pages; Ctrl+C stops
it with one `interrupted` line (exit status 130).

    pip install -e ".[serve]"
    python -m succu.serve --ckpt runs/abcgpt_char/version_0/checkpoints/last.ckpt   # 127.0.0.1:8000
    python -m succu.serve --ckpt CKPT --screenshot page.png --compare "0;1"   # needs [serve-test]

Layout: `streams` holds what runs without the web (the loaded checkpoint, request checks, one
worker thread per stream, a single pane's or side by side's); `app` is the FastAPI app (server-sent events) and a local server
thread; `browser` drives headless Chromium through Selenium (tests and screenshots);
`__main__` is the command line. Only `app` and `browser` import the optional extras, and only
when they are used, so the core install stays lean.
"""
