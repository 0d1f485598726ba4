"""`python -m succu.generate --ckpt PATH --prompt "is ruby a boy?"`: talk to any succu checkpoint.

The checkpoint carries the module class, hyperparameters and tokenizer, so nothing else is needed.
Text is printed as it is generated. Prompt words a word vocabulary lacks become `<UNK>` (a note
names them); characters a character vocabulary lacks are an error naming them, or are dropped
with `--drop_unknown` (a prompt left empty by it is refused). An empty prompt starts a text: after
`<BOS>`, or a line break when the vocabulary has no `<BOS>`. Ctrl+C ends with one `interrupted`
line, exit status 130. A gated model (GatedGPT) without `--alpha` runs at the middle of its dial,
alpha = 0.5 (the centre 1/K, ..., 1/K over K sources), and says so; `--alpha 0.2,0.3,0.5` is a
point of a K-source dial (shares summing to 1), a single number the two-source alpha. Sampling is
seeded (`--seed`) and reproducible; tiny temperatures approach greedy decoding; `--top_k` and
`--top_p` (nucleus) narrow the draw to the most likely tokens. The noise-embedding LMs can instead stop by their statistics rule
(`--stop key`, greedy, EOS banned) with a stub search: `--search beam|minimax|alphabeta`, `--beams`
stubs or children per stub, `--budget` expansions for the depth-first searches.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from succu.contracts import KeyRuleStop
from succu.decoding import Decoding
from succu.devices import check_device
from succu.dial import (
    Position,
    centre,
    parse_position,
    position_for,
    position_label,
    sweep_positions,
)
from succu.dial_streams import stream_positions
from succu.errors import fail, run_cli
from succu.inference import load_model
from succu.nn.noise import SEARCHES
from succu.sampling import check_sampling

# New tokens per prompt at most: far beyond any block_size here, and at CPU speeds (~10^3 tokens/s)
# minutes of output; a larger request is a typo (1e20), refused rather than left running.
MAX_NEW_TOKENS = 10_000


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def token_budget(value: str) -> int:
    """--max_new_tokens: a whole number, written plainly or as 1e3, at most MAX_NEW_TOKENS."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}")
    if number > MAX_NEW_TOKENS:
        raise argparse.ArgumentTypeError(
            f"{value} is above the cap of {MAX_NEW_TOKENS} new tokens per prompt")
    return int(number)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m succu.generate", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="path to a succu checkpoint (.ckpt)")
    p.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for several")
    p.add_argument("--max_new_tokens", type=token_budget, default=None,
                   help=f"tokens to add per prompt, at most {MAX_NEW_TOKENS} (default: up to the "
                        "model's block_size); printed as they come")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature, > 0; tiny values approach --greedy")
    p.add_argument("--top_k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top_p", type=float, default=None,
                   help="nucleus sampling: among the fewest most likely tokens whose probability "
                        "reaches p, in (0, 1] (after --top_k when both are given; 1: no cut)")
    p.add_argument("--greedy", action="store_true",
                   help="argmax decoding (ignores temperature, top_k and top_p)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    p.add_argument("--no_cache", action="store_true", help="recompute the full context every step")
    p.add_argument("--device", default="cpu", help="torch device to run on")
    p.add_argument("--alpha", default=None,
                   help=f"dial position of gated models (GatedGPT): a number in [0, 1] for two "
                        "sources, or K comma-separated shares summing to 1 (e.g. 0.2,0.3,0.5) for "
                        f"K; default the middle ({position_label(centre(2))}, or 1/K each)")
    p.add_argument("--alpha_sweep", action="store_true",
                   help="gated models: continue each prompt at alpha = 0, 0.25, 0.5, 0.75, 1 (K "
                        "sources: at each corner and the centre)")
    p.add_argument("--stop", choices=("eos", "key"), default="eos",
                   help="noise LMs: stop at EOS, or by the statistics (key) rule with a stub search")
    p.add_argument("--search", choices=SEARCHES, default="beam",
                   help="--stop key: keep --beams stubs (beam) or search depth first (minimax, "
                        "alphabeta: the same answer with fewer expansions)")
    p.add_argument("--beams", type=int, default=1, help="--stop key: stubs kept / children per stub")
    p.add_argument("--budget", type=int, default=200,
                   help="--stop key with minimax/alphabeta: node expansions at most")
    p.add_argument("--drop_unknown", action="store_true",
                   help="drop prompt characters the model's vocabulary lacks (default: refuse them)")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Arguments, with every bad value (including argparse's own) as one `error:` line."""
    parser = build_parser()
    parser.error = fail  # type: ignore[method-assign]  # argparse would print its usage first
    return parser.parse_args(argv)


def unknown_summary(counts) -> str:
    """`'é' x2, 'ü' x1` — the pieces a vocabulary lacks, most frequent first, ten at most."""
    shown = ", ".join(f"{piece!r} x{n}" for piece, n in counts.most_common(10))
    return shown + (f" and {len(counts) - 10} more" if len(counts) > 10 else "")


def prepare_prompts(module: Decoding, prompts: list[str], drop: bool) -> list[str]:
    """Prompts the tokenizer can encode: unknown words noted (they read as <UNK>), unknown
    characters refused or, with `drop`, removed (noted either way). A prompt that gives the model
    no token at all starts a text (`start_prompt`), unless `drop` emptied it: that is refused."""
    tok, ready = module.tokenizer, []
    for prompt in prompts:
        if drop and tok.unknown(prompt) and not module.prompt_ids(tok.without_unknown(prompt)):
            fail(f"prompt {prompt!r}: nothing is left once --drop_unknown leaves out the "
                 f"{sum(tok.unknown(prompt).values())} characters the checkpoint's vocabulary "
                 "lacks; give some text it knows")
        text = resolve_unknown(tok, prompt, f"prompt {prompt!r}", drop)[0]
        # No token at all (a vocabulary without <BOS>, an empty prompt): start a text.
        ready.append(text if module.prompt_ids(text) else start_prompt(module))
    return ready


def start_prompt(module: Decoding) -> str:
    """What an empty prompt continues when the vocabulary has no `<BOS>` (with one, the model
    starts a text after it): a line break, where texts and paragraphs start (nanoGPT's sample.py
    starts from one too); a vocabulary without either is one error line."""
    tok = module.tokenizer
    if not tok.unknown("\n") and tok.encode("\n"):
        note("the prompt is empty and the vocabulary has no <BOS>: starting from a line break")
        return "\n"
    fail("an empty prompt needs a <BOS> or a line break in the checkpoint's vocabulary, and this "
         "one has neither; give some text to continue")


def resolve_unknown(tok, text: str, what: str, drop: bool) -> tuple[str, dict[str, int]]:
    """`text` ready to encode, and what it held that the vocabulary lacks: words become `<UNK>`
    (said in a note); characters without an `<UNK>` are one error line, or left out (`drop`)."""
    counts = tok.unknown(text)
    say_unknown(tok, counts, what, drop)
    if counts and tok.unk_id is None:
        text = tok.without_unknown(text)
    return text, counts


def say_unknown(tok, counts, what: str, drop: bool) -> None:
    """Words a word vocabulary lacks are one note (they read as `<UNK>`); characters a character
    vocabulary lacks are one error line, or with `drop` a note that they are left out."""
    total = sum(counts.values())
    if counts and tok.unk_id is not None:
        note(f"{what}: {total} words not in the vocabulary, scored as <UNK>: {unknown_summary(counts)}")
    elif counts and not drop:
        fail(f"{what} has {total} characters the checkpoint's vocabulary lacks: "
             f"{unknown_summary(counts)} (--drop_unknown leaves them out)")
    elif counts:
        note(f"{what}: left out {total} characters not in the vocabulary: {unknown_summary(counts)}")


def load(args: argparse.Namespace) -> Decoding:
    """The checkpoint's module, every setting checked; `args.alpha` becomes the model's position."""
    check_sampling(args.temperature, args.top_k, args.max_new_tokens or 0, args.top_p)
    position = None if args.alpha is None else parse_position(args.alpha)  # before the load
    module = load_model(args.ckpt, map_location=check_device(args.device))
    if (args.alpha is not None or args.alpha_sweep) and not module.has_dial:
        fail(f"--alpha needs a gated model; {args.ckpt} holds {type(module.model).__name__}")
    if position is not None:
        args.alpha = position_for(position, module.model.n_sources)
    if args.stop == "key" and not isinstance(module, KeyRuleStop):
        fail(f"--stop key needs a noise-embedding LM (NoiseLM, NoiseTransformerLM); {args.ckpt} "
             f"holds {type(module.model).__name__}")
    if args.beams < 1 or args.budget < 1:
        fail(f"--beams and --budget must be at least 1, got {args.beams} and {args.budget}")
    if module.has_dial and args.alpha is None and not args.alpha_sweep:
        middle = position_label(module.dial_kwargs({})["alpha"])
        note(f"{type(module.model).__name__} has a dial and no --alpha was given: generating at "
             f"alpha={middle}, the middle (--alpha 0 or 1 for either corpus's end"
             f"{'' if module.model.n_sources == 2 else '; K shares for a corner, e.g. 1,0,0'})")
    return module


def main(argv: list[str] | None = None) -> list[str]:
    return run_cli(lambda: generate_main(argv))


def generate_main(argv: list[str] | None) -> list[str]:
    args = parse(argv)
    module = load(args)
    prompts = prepare_prompts(module, args.prompt, args.drop_unknown)
    if args.stop == "key":
        return key_rule(module, args, prompts)
    if args.alpha_sweep:
        return alpha_sweep(module, args, prompts, sweep_positions(module.model.n_sources))
    alphas = [args.alpha]
    outputs = []
    for alpha in alphas:
        # The same seed at every alpha, so the dial is the only thing that changes.
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        for shown, prompt in zip(args.prompt, prompts):
            tag = "" if alpha is None else f"[alpha={position_label(alpha)}] "
            print(f"{tag}{shown} -> ", end="", flush=True)
            pieces = []
            try:
                for piece in module.stream(
                    prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                    use_cache=not args.no_cache, generator=generator,
                    **({} if alpha is None else {"alpha": alpha}),
                ):
                    print(piece, end="", flush=True)
                    pieces.append(piece)
            finally:  # Ctrl+C too: the line of text ends before anything else is said
                print(flush=True)
            outputs.append("".join(pieces))
    return outputs


def alpha_sweep(module: Decoding, args: argparse.Namespace, prompts: list[str],
                alphas: list[Position]) -> list[str]:
    """--alpha_sweep: each prompt at every position in one batch, one forward pass per token
    (`succu.dial_streams`), with the lines and texts of one position after another: each
    position draws from a generator of its own seeded with --seed (the dial is the only thing
    that changes), which goes on from prompt to prompt. The first position's lines are printed
    as they are generated, the others' once every prompt has been."""
    generators = [torch.Generator(device=args.device).manual_seed(args.seed) for _ in alphas]
    texts: list[list[str]] = [[] for _ in alphas]  # texts[position][prompt]
    tags = [f"[alpha={position_label(alpha)}] " for alpha in alphas]
    for shown, prompt in zip(args.prompt, prompts):
        print(f"{tags[0]}{shown} -> ", end="", flush=True)
        pieces: list[list[str]] = [[] for _ in alphas]
        try:
            for p, piece in stream_positions(
                module, prompt, alphas, args.max_new_tokens, generators=generators,
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                greedy=args.greedy, use_cache=not args.no_cache,
            ):
                if piece is not None:
                    pieces[p].append(piece)
                    if p == 0:
                        print(piece, end="", flush=True)
        finally:  # Ctrl+C too: the line of text ends before anything else is said
            print(flush=True)
        for text, parts in zip(texts, pieces):
            text.append("".join(parts))
    for tag, lines in zip(tags[1:], texts[1:]):
        for shown, text in zip(args.prompt, lines):
            print(f"{tag}{shown} -> {text}", flush=True)
    return [text for lines in texts for text in lines]


def key_rule(module: Decoding, args: argparse.Namespace, prompts: list[str]) -> list[str]:
    """Greedy answers stopped by the statistics rule, each printed with its search's cost."""
    outputs = []
    for shown, prompt in zip(args.prompt, prompts):
        ids = module.prompt_ids(prompt)
        budget = args.max_new_tokens or max(1, module.model.cfg.block_size - len(ids))
        result, expansions = module.key_search(ids, budget, args.beams, args.search, args.budget)
        text = module.tokenizer.decode(result.tokens)
        how = "stopped by the rule" if result.stopped else "ran to the budget"
        print(f"{shown} -> {text}   [{how}; {expansions} expansions]", flush=True)
        outputs.append(text)
    return outputs


if __name__ == "__main__":
    main(sys.argv[1:])
