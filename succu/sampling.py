"""How a next token is drawn from a model's logits: temperature, top-k, top-p (nucleus).

Plain torch, shared by `succu.decoding.Decoding`'s generation (`generate`, `steps`, `complete`, `stream`),
`python -m succu.generate`, the serve page and the callbacks that sample. Temperature applies
first, then top-k, then top-p; top_p = 1 (or None) cuts nothing and draws exactly what sampling
without it draws.
"""

from __future__ import annotations

import math

import torch

# The smallest temperature that samples: the smallest float32 above 0 (a subnormal). Logits are
# float32 and the temperature becomes one when they are divided by it; a smaller one rounds to 0,
# and the division gives NaN instead of the near-greedy draw that tiny temperatures approach.
MIN_TEMPERATURE = float(torch.finfo(torch.float32).smallest_normal) * 2.0**-23


def check_temperature(temperature: float) -> None:
    """A temperature that samples: finite and above 0 as a float32 (one ValueError naming it)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be > 0, got {temperature} (small values such as 0.1 "
                         "approach greedy decoding)")
    if float(torch.tensor(temperature, dtype=torch.float32)) == 0:
        raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:.4g}, the smallest float32 "
                         f"above 0 (the logits are float32), got {temperature:g} (small values "
                         "such as 0.1 approach greedy decoding)")


def check_sampling(temperature: float, top_k: int | None, max_new_tokens: int,
                   top_p: float | None = None) -> None:
    """Sampling settings that can run. Any temperature from `MIN_TEMPERATURE` up samples: tiny
    ones approach greedy decoding (`sampling_probs` divides logits already shifted to max 0, so
    nothing overflows)."""
    check_temperature(temperature)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1: no nucleus cut), got {top_p}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """The distribution a token is drawn from, (B, V): softmax of logits / temperature, cut to
    the `top_k` most likely tokens, then to the nucleus of `top_p` (`nucleus`), renormalised."""
    # Shifted to max 0 first: a tiny temperature then sends the others to -inf (greedy in the
    # limit) instead of overflowing to inf - inf = NaN, which multinomial refuses.
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:  # top_p = 1 keeps every token: the same draws as None
        logits = nucleus(logits, top_p)
    return logits.softmax(dim=-1)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """`logits` (B, V) with every token outside the nucleus at -inf: the smallest set of most
    likely tokens whose probability reaches `top_p` (the token whose probability crosses it is
    kept, and so is the most likely token whatever `top_p`)."""
    probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True, stable=True)
    # The mass of the tokens more likely than each: a token is kept while that is below top_p.
    before = torch.cat([torch.zeros_like(probs[..., :1]), probs.cumsum(dim=-1)[..., :-1]], dim=-1)
    dropped = before >= top_p  # in order of probability; back to vocabulary order:
    drop = torch.empty_like(dropped).scatter_(-1, order, dropped)
    return logits.masked_fill(drop, float("-inf"))
