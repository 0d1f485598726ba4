"""`python -m succu.serve --ckpt PATH [--host 127.0.0.1] [--port 8000]`: the dial page (see
`succu.serve`); `--screenshot out.png` writes a PNG of it instead of serving."""

from __future__ import annotations

import argparse
import os
import sys

from succu.devices import check_device
from succu.dial import own_end, parse_position, position_for, position_label
from succu.errors import fail, run_cli

EXTRA = {"serve": ("fastapi", "uvicorn"), "serve-test": ("fastapi", "uvicorn", "selenium")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m succu.serve",
                                description=__doc__.splitlines()[0].rstrip(":"))
    p.add_argument("--ckpt", required=True, help="path to a succu checkpoint (.ckpt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the page has "
                        "no login, so bind other addresses only on a trusted network)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--device", default="cpu", help="torch device to run on")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per operation (default: $OMP_NUM_THREADS, else 2). Streams "
                        "run on threads of their own; few threads each keeps tabs from contending")
    shot = p.add_argument_group("screenshot (needs the serve-test extra and Chromium)")
    shot.add_argument("--screenshot", metavar="PNG", default=None,
                      help="write a PNG of the page after streaming --prompt, then exit")
    shot.add_argument("--compare", default=None,
                      help="dial positions for the screenshot, ';'-separated: one for a single "
                           "pane, two side by side (default: the two ends, '0;1', or the first "
                           "and last corner of a K-source dial)")
    shot.add_argument("--prompt", default="once upon a time", help="the screenshot's prompt")
    shot.add_argument("--temperature", default="0.8", help="the screenshot's temperature")
    shot.add_argument("--max_new_tokens", default="200", help="the screenshot's length")
    shot.add_argument("--seed", default="0", help="the screenshot's sampling seed")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    parser.error = fail  # type: ignore[method-assign]  # one `error:` line, no usage dump
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        fail(f"--port must be between 0 and 65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        fail(f"--threads must be at least 1, got {args.threads}")
    return args


def require_extra(name: str) -> None:
    """One line naming the install command when an optional extra's package is missing."""
    for module in EXTRA[name]:
        try:
            __import__(module)
        except ImportError:
            fail(f"python -m succu.serve{' --screenshot' if name == 'serve-test' else ''} needs "
                 f"the {name} extra ({module} is not installed): pip install -e \".[{name}]\"")


def set_threads(threads: int | None) -> None:
    """Few intra-op threads: the served models are small, and every open stream runs its own
    worker thread, so wide operations would only make concurrent streams contend."""
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else 2
    torch.set_num_threads(threads)


def shot_positions(text: str | None, k: int) -> list[str]:
    """The screenshot's dial positions, checked against the dial (none without one)."""
    if k == 0:
        if text:
            fail("--compare needs a gated model; this checkpoint has no dial")
        return []
    if text is None:
        return [position_label(own_end(corpus, k)) for corpus in (0, k - 1)]
    positions = [p.strip() for p in text.split(";") if p.strip()]
    if not 1 <= len(positions) <= 2:
        fail(f"--compare takes one or two ';'-separated dial positions, got {text!r}")
    for p in positions:
        position_for(parse_position(p), k)  # a bad one is one line naming it
    return positions


def serve_main(argv: list[str] | None) -> None:
    args = parse(argv)
    require_extra("serve-test" if args.screenshot else "serve")
    from succu.serve.app import local_server, serve_forever
    from succu.serve.streams import Served

    set_threads(args.threads)
    served = Served.load(args.ckpt, check_device(args.device))
    if not args.screenshot:
        serve_forever(served, args.host, args.port)
        return
    from succu.serve.browser import browser_problem, screenshot

    problem = browser_problem()
    if problem:
        fail(f"--screenshot needs headless Chromium: {problem}")
    positions = shot_positions(args.compare, served.k)
    settings = {"temperature": args.temperature, "length": args.max_new_tokens, "seed": args.seed}
    with local_server(served, args.host, 0) as url:
        out = screenshot(url, args.screenshot, args.prompt, positions, settings)
    print(f"succu: wrote {out} ({served.name} at alpha {' and '.join(positions) or '-'})")


def main(argv: list[str] | None = None) -> None:
    run_cli(lambda: serve_main(argv))  # Ctrl+C (how the server stops): one line, exit 130


if __name__ == "__main__":
    main(sys.argv[1:])
