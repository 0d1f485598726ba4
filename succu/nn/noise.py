"""Building blocks of the noise-embedding LMs (succu/models/noise_lm.py, the write-up's model, and
succu/models/noise_transformer.py, its transformer-encoder variant): fixed random codes, the causal
pair-mean hierarchy and scattershot subsets, the distance softmax ("soft snap"), the forward
recursion of the noise-state chain, the statistics of the stop rule and the stub search that
decodes with it. The maths is in the models' docstrings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from succu.nn.lookup import Lookup, make_lookup


# ---- codes and the scattershot context -----------------------------------------------------------
def make_codes(vocab_size: int, dim: int, seed: int, centred: bool = False) -> torch.Tensor:
    """C ~ Uniform(0, 1)^(V x d) from its own seeded generator (centred: Uniform(-1/2, 1/2))."""
    codes = torch.rand(vocab_size, dim, generator=torch.Generator().manual_seed(seed))
    return codes - 0.5 if centred else codes


def shift_back(x: torch.Tensor, s: int) -> torch.Tensor:
    """y_t = x_(t-s) along dim 1, and y_t = x_t where t - s < 0 (the partner does not exist)."""
    if s >= x.size(1):
        return x
    return torch.cat([x[:, :s], x[:, :-s]], dim=1)


def pair_levels(codes_in: torch.Tensor, n_levels: int, stride: int) -> list[torch.Tensor]:
    """[L^0, .., L^n], each (B, T, d): causal pair means (section 2 of the module docstring)."""
    levels = [codes_in]
    for k in range(n_levels):
        s = 1 if stride == 1 else 2**k
        levels.append(0.5 * (levels[-1] + shift_back(levels[-1], s)))
    return levels


def scatter_lags(n_scatter: int, window: int, size: int, seed: int) -> torch.Tensor:
    """(m, window) 0/1 membership of each subset's lags: lag 0 always, size - 1 others at random."""
    gen = torch.Generator().manual_seed(seed)
    member = torch.zeros(n_scatter, window)
    member[:, 0] = 1.0
    for j in range(n_scatter):
        others = torch.randperm(window - 1, generator=gen)[: size - 1] + 1
        member[j, others] = 1.0
    return member


def scatter_means(codes_in: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """S^j_t = mean of c_(x_(t-o)) over lags o of subset j with o <= t; (B, T, m, d)."""
    B, T, d = codes_in.shape
    m, W = member.shape
    # A causal convolution: left-pad by W - 1 and read lag o at kernel tap W - 1 - o.
    x = F.pad(codes_in.transpose(1, 2).reshape(B * d, 1, T), (W - 1, 0))
    kernel = member.flip(1).unsqueeze(1).to(codes_in)  # (m, 1, W)
    sums = F.conv1d(x, kernel).view(B, d, m, T)
    present = F.conv1d(F.pad(torch.ones(1, 1, T, device=x.device), (W - 1, 0)), kernel)  # (1, m, T)
    return (sums / present.view(1, 1, m, T)).permute(0, 3, 2, 1)


# ---- snap and the noise-state HMM ----------------------------------------------------------------
def distance_log_softmax(
    q: torch.Tensor, noise: torch.Tensor, codes: torch.Tensor, log_sigma: torch.Tensor
) -> torch.Tensor:
    """log e_t(k, y) = log_softmax_y(-||q_t - N_k - c_y||^2 / 2 sigma^2), (B, T, K, V), matmul."""
    half_norms = 0.5 * (codes * codes).sum(-1)  # (V,)
    scores = (q @ codes.t()).unsqueeze(2) - (noise @ codes.t()) - half_norms  # (B, T, K, V)
    return (scores * torch.exp(-2.0 * log_sigma)).log_softmax(-1)


def hmm_predictive(
    log_emit_obs: torch.Tensor, log_trans: torch.Tensor, log_init: torch.Tensor
) -> torch.Tensor:
    """log pi_t for t = 0..T-1, (B, T, K), from log e_t(k, y_t) of the observed y_0..y_(T-2).

    log_emit_obs: (B, T - 1, K); log_trans: (K, K), rows log A[i, :]; log_init: (K,) log pi_0.
    """
    B, T1, K = log_emit_obs.shape
    log_pi = log_init.expand(B, K)
    out = [log_pi]
    for t in range(T1):
        # Posterior phi_t after y_t, then one step of the chain: pi_(t+1)(j) = sum_i phi_t(i) A_ij.
        log_phi = (log_pi + log_emit_obs[:, t]).log_softmax(-1)
        log_pi = torch.logsumexp(log_phi.unsqueeze(2) + log_trans, dim=1)
        out.append(log_pi)
    return torch.stack(out, dim=1)


class _NodeFilter(torch.autograd.Function):
    """The normalised forward filter of NoiseLM's node as one autograd node (see `node_filter`).

    The recursion is nonlinear in its state (C reads the node's last posteriors through a
    softmax), so the forward pass stays a loop over positions, but a short one with no autograd
    graph. Its adjoint is linear in the gradients: with everything the forward pass stored, the
    Jacobians of each step are built for all positions at once, and the backward loop only
    carries the (B, K) gradient of pi_(t+1) into the posteriors of C's window (one batched
    matrix product) and through the normalisation back to pi_t (another). The gradients of the
    emissions, of C's weight and shifts, of B and of omega are then batched products over all
    positions.
    """

    @staticmethod
    def forward(ctx, emit, pi0, shift, weight, move_b, keep, window):
        B, T1, K = emit.shape
        W = window if weight is not None else 1
        # phi_t at row t + W - 1 (zero rows before t = 0); C's window is a slice of its flat view.
        phis = emit.new_zeros(B, T1 + W - 1, K)
        flat = phis.view(B, (T1 + W - 1) * K)
        # Everything per position is made once up front: the loop runs few, small operations.
        emits = emit.unsqueeze(2).unbind(1)  # (B, 1, K) each, as pi
        shifts = shift.unbind(1) if weight is not None else None
        pi = pi0.expand(B, 1, K)
        pis, moves = [pi], []
        for t in range(T1):
            u = pi * emits[t]
            phi = torch.div(u, u.sum(-1, keepdim=True), out=phis[:, t + W - 1 : t + W])  # after y_t
            if weight is None:
                pi = phi @ move_b
            else:
                logits = torch.addmm(shifts[t], flat[:, t * K : (t + W) * K], weight)
                s = logits.view(B, K, K).softmax(-1)
                moves.append(s)
                pi = torch.bmm(phi, s if move_b is None else torch.addcmul(move_b, keep, s))
            pis.append(pi)
        pis = torch.cat(pis, 1)
        S = torch.stack(moves, 1) if moves else emit.new_zeros(B, 0, K, K)
        ctx.window = W
        ctx.save_for_backward(emit, pis, phis, S, weight, move_b, keep)
        return pis

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_pis):
        emit, pis, phis, S, weight, move_b, keep = ctx.saved_tensors
        W = ctx.window
        B, T1, K = emit.shape
        eye = torch.eye(K, dtype=emit.dtype, device=emit.device)
        k = 1.0 if keep is None else keep  # M_t = S_t when B is off
        pi, phi = pis[:, :T1], phis[:, W - 1 :]  # pi_t, phi_t for t < T1
        z = (pi * emit).sum(-1, keepdim=True)
        # d phi_t / d pi_t: N_t[i, j] = (delta_ij - phi_i) e_j / z (pi -> pi * e -> normalised).
        N = (eye - phi.unsqueeze(-1)) * (emit / z).unsqueeze(-2)  # (B, T1, K, K)
        # A_t (K, W K): gpi_(t+1) @ A_t is what pi_(t+1) sends to the window's posteriors (oldest
        # first): through C's logits, and directly through M_t = move_b + k S_t (the last slot).
        if weight is None:
            A = move_b.t().expand(B, T1, K, K)
        else:
            kphiS = k * phi.unsqueeze(-1) * S  # [i, j] = k phi_i S_ij
            # Through the row softmax, the gradient of C's logits is linear in gpi_(t+1):
            # g_ij = k phi_i S_ij (gpi_j - sum_l S_il gpi_l); the window's is g @ weight^T.
            w = weight.t().reshape(K, K, W * K)  # [i, j, window slot]
            A = torch.einsum("btil,ilm->btlm", kphiS, w) - torch.einsum(
                "btil,btim->btlm", S, torch.einsum("btij,ijm->btim", kphiS, w)
            )
            direct = k * S if move_b is None else move_b + k * S
            A[..., (W - 1) * K :] += direct.transpose(-1, -2)
        acc = g_pis.new_zeros(B, T1 + W - 1, K)  # d loss / d phi_t at row t + W - 1
        A, N, g_out = A.unbind(1), N.unbind(1), g_pis.unsqueeze(2).unbind(1)
        gpi = g_out[T1]  # (B, 1, K)
        for t in reversed(range(T1)):
            acc[:, t : t + W] += torch.bmm(gpi, A[t]).view(B, W, K)
            gpi = torch.baddbmm(g_out[t], acc[:, t + W - 1 : t + W], N[t])
        g_phi = acc[:, W - 1 :]
        g_u = (g_phi - (g_phi * phi).sum(-1, keepdim=True)) / z  # d loss / d (pi_t * e_t)
        g_pi = g_u * emit + g_pis[:, :T1]  # d loss / d pi_t, t < T1 (gpi: the same at t = 0)
        g_next = torch.cat([g_pi[:, 1:], g_pis[:, T1:]], 1)  # d loss / d pi_(t+1)
        g_shift = g_weight = g_move = g_keep = None
        if weight is None:
            g_move = torch.einsum("bti,btj->ij", phi, g_next)
        else:
            sg = (S @ g_next.unsqueeze(-1)).squeeze(-1)
            g_shift = (kphiS * (g_next.unsqueeze(-2) - sg.unsqueeze(-1))).view(B, T1, K * K)
            windows = torch.stack([phis[:, o : o + T1] for o in range(W)], 2)  # (B, T1, W, K)
            windows = windows.reshape(B * T1, W * K)
            g_weight = windows.t() @ g_shift.reshape(B * T1, K * K)
            if move_b is not None:
                g_move = torch.einsum("bti,btj->ij", phi, g_next)
                g_keep = torch.einsum("bti,btij,btj->", phi, S, g_next)
        return g_u * pi, gpi.sum((0, 1)), g_shift, g_weight, g_move, g_keep, None


def node_filter(
    emit: torch.Tensor,
    pi0: torch.Tensor,
    window: int,
    move_b: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """pi_0..pi_(T1), (B, T1 + 1, K): NoiseLM's normalised forward filter over the node's states.

        phi_t = pi_t * e_t / sum(pi_t * e_t)                     (the node after y_t)
        C_t = softmax_rows(view_KxK([phi_(t-W+1), .., phi_t] @ weight + shift_t))
        pi_(t+1) = phi_t (move_b + keep * C_t)     (move_b alone without weight, C_t alone
                                                    without move_b)
    emit: (B, T1, K) e_t(k, y_t), each row scaled freely (phi is normalised); pi0: (K,);
    move_b: (K, K) (omega B in the transition mode); shift: (B, T1, K * K) C's logits less the
    window's part (shift_t belongs to the step from t to t + 1); weight: (W * K, K * K); keep:
    () 1 - omega. Posteriors before t = 0 are zero in C's window. One autograd node whose
    backward is the exact adjoint (`_NodeFilter`); first derivatives only; autocast off inside.
    """
    if (weight is None) != (shift is None) or (weight is None and move_b is None):
        raise ValueError("node_filter needs move_b, or weight with shift (and keep with move_b)")
    if weight is not None and move_b is not None and keep is None:
        raise ValueError("node_filter: keep (1 - omega) is needed with both move_b and weight")
    # In the emissions' precision, under autocast too: a K-state filter is no work for bf16.
    dtype = emit.dtype
    shift, weight, move_b, keep, pi0 = (
        None if x is None else x.to(dtype) for x in (shift, weight, move_b, keep, pi0)
    )
    with torch.autocast(emit.device.type, enabled=False):
        return _NodeFilter.apply(emit, pi0, shift, weight, move_b, keep, window)


def mixture_log_probs(log_pi: torch.Tensor, log_emit: torch.Tensor) -> torch.Tensor:
    """log p(y | x_<=t) = logsumexp_k (log pi_t(k) + log e_t(k, y)), (B, T, V)."""
    return torch.logsumexp(log_pi.unsqueeze(-1) + log_emit, dim=2)


# ---- stop statistics -----------------------------------------------------------------------------
def running_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance over positions 0..t of x (B, T, n), both (B, T, n)."""
    count = torch.arange(1, x.size(1) + 1, device=x.device, dtype=x.dtype).view(1, -1, 1)
    mean = x.cumsum(1) / count
    return mean, ((x * x).cumsum(1) / count - mean * mean).clamp(min=0.0)


def suffix_code_stats(
    labels: torch.Tensor, codes: torch.Tensor, eos_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and variance of the codes of labels[t..e-1], e the next EOS at or after t, and the mask
    of positions with an EOS ahead and a non-empty output before it; (B,T,d), (B,T,d), (B,T)."""
    B, T = labels.shape
    valid = (labels != eos_id) & (labels >= 0)
    c = codes[labels.clamp(min=0)] * valid.unsqueeze(-1)
    zero = c.new_zeros(B, 1, c.size(-1))
    # Reversed cumulative sums, with a zero row at T so "sum from t to e-1" = S_t - S_e.
    s1 = torch.cat([c.flip(1).cumsum(1).flip(1), zero], 1)
    s2 = torch.cat([(c * c).flip(1).cumsum(1).flip(1), zero], 1)
    n = torch.cat([valid.flip(1).cumsum(1).flip(1), valid.new_zeros(B, 1, dtype=torch.long)], 1)
    pos = torch.arange(T, device=labels.device).expand(B, T)
    eos_pos = torch.where(labels == eos_id, pos, torch.full_like(pos, T))
    nxt = eos_pos.flip(1).cummin(1).values.flip(1)  # (B, T): next EOS at or after t, T if none
    idx = nxt.unsqueeze(-1).expand(-1, -1, c.size(-1))
    count = (n[:, :T] - n.gather(1, nxt)).to(c.dtype)
    mask = (nxt < T) & (count > 0)
    mean = (s1[:, :T] - s1.gather(1, idx)) / count.clamp(min=1).unsqueeze(-1)
    var = (s2[:, :T] - s2.gather(1, idx)) / count.clamp(min=1).unsqueeze(-1) - mean * mean
    return mean, var.clamp(min=0.0), mask


def stop_mismatch(
    mean: torch.Tensor, var: torch.Tensor, mean_hat: torch.Tensor, var_hat: torch.Tensor
) -> torch.Tensor:
    """D = ||m - mu_hat||^2 / d + ||v - v_hat||^2 / d over the last dimension."""
    return ((mean - mean_hat) ** 2).mean(-1) + ((var - var_hat) ** 2).mean(-1)


class StopHead(nn.Module):
    """g: running mean and variance of its input (the key layer's, or the prompt's codes) ->
    predicted output code mean and variance, through one hidden layer (`hidden`, default 2 n_in)."""

    def __init__(self, n_in: int, code_dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * n_in
        self.net = nn.Sequential(
            nn.LayerNorm(2 * n_in),
            nn.Linear(2 * n_in, hidden),
            nn.GELU(),
            nn.Linear(hidden, 2 * code_dim),
        )

    def forward(self, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = running_mean_var(key)
        out_mean, out_var = self.net(torch.cat([mean, var], -1)).chunk(2, dim=-1)
        return out_mean, F.softplus(out_var)


@dataclass
class NoiseLMOutput:
    log_probs: torch.Tensor  # (B, T, V) log p(y | x_<=t)
    log_pi: torch.Tensor  # (B, T, K) predictive distribution over the K candidates
    log_emit: torch.Tensor  # (B, T, K, V) log e_t(k, y)
    mu: torch.Tensor  # (B, T, K, d) the candidates
    stop_mean: torch.Tensor  # (B, T, d) predicted output code mean
    stop_var: torch.Tensor  # (B, T, d) predicted output code variance
    path_b: torch.Tensor | None = None  # (B, T - 1) posterior of the B path (NoiseLM, C as noise)




# ---- the hard snap --------------------------------------------------------------------------
class CodeSnap:
    """The hard snap of a noise LM (a torch module with `codes`, `cfg.lookup`, `_lookup` and
    `outputs(input_ids) -> NoiseLMOutput`): its candidates replaced by the nearest code."""

    def lookup(self, kind: str | None = None, **options) -> Lookup:
        """The code lookup backend (cached; rebuilt when the codes change or another is asked)."""
        kind = kind or self.cfg.lookup
        stamp = (kind, tuple(sorted(options.items())), self.codes.data_ptr(), self.codes._version)
        if self._lookup is None or self._lookup[0] != stamp:
            self._lookup = (stamp, make_lookup(kind, self.codes.detach(), **options))
        return self._lookup[1]

    @torch.no_grad()
    def snap(self, queries: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Nearest code of each query (..., d) -> ids (...): exactly a code's index."""
        flat = queries.reshape(-1, queries.size(-1))
        return self.lookup(kind).nearest(flat).view(queries.shape[:-1])

    @torch.no_grad()
    def snap_decode(self, input_ids: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Next token of each row by the post's rule: the most probable candidate snapped to the
        nearest code, (B,)."""
        out = self.outputs(input_ids)
        best = out.log_pi[:, -1].argmax(-1)  # (B,)
        mu = out.mu[:, -1].gather(1, best.view(-1, 1, 1).expand(-1, 1, out.mu.size(-1)))
        return self.snap(mu.squeeze(1), kind)


# ---- decoding with the stop rule -----------------------------------------------------------------
@dataclass
class SearchResult:
    tokens: list[int]
    stopped: bool  # True when the stop rule ended it, False when max_new_tokens did
    log_prob: float
    mismatch: float


@dataclass
class Hypothesis:
    """A partial output: its tokens, log p(tokens | prompt), and the sums of its codes and squares."""

    tokens: list[int]
    log_prob: float
    code_sum: torch.Tensor
    code_sq_sum: torch.Tensor

    def extend(self, y: int, log_p: float, codes: torch.Tensor) -> Hypothesis:
        c = codes[y]
        return Hypothesis(
            self.tokens + [y], self.log_prob + log_p, self.code_sum + c, self.code_sq_sum + c * c
        )

    def mismatch(self, j: int, target_mean: torch.Tensor, target_var: torch.Tensor) -> float:
        """D_j of this output (j tokens) against the predicted output mean and variance."""
        mean = self.code_sum / j
        var = (self.code_sq_sum / j - mean * mean).clamp(min=0.0)
        return float(stop_mismatch(mean, var, target_mean, target_var))


@torch.no_grad()
def stub_search(
    next_log_probs: Callable[[torch.Tensor], torch.Tensor],
    prompt: Sequence[int],
    codes: torch.Tensor,
    target_mean: torch.Tensor,
    target_var: torch.Tensor,
    *,
    beams: int = 1,
    max_new_tokens: int = 32,
    tol: float = 0.0,
    weight: float = 0.0,
    banned: Sequence[int] = (),
) -> SearchResult:
    """Keep the `beams` best partial outputs by log p(o | prompt) - weight * D_j; a hypothesis ends
    when D_j <= tol. `next_log_probs` maps (n, L) id rows to (n, V) next-token log-probabilities.
    With beams = 1 this is greedy decoding stopped by the key rule."""
    zero = codes.new_zeros(codes.size(1))
    hyps = [Hypothesis([], 0.0, zero, zero)]
    done: list[tuple[float, SearchResult]] = []
    live: list[tuple[float, SearchResult]] = []  # the unfinished hypotheses of the last step
    for j in range(1, max_new_tokens + 1):
        rows = torch.tensor([list(prompt) + h.tokens for h in hyps], device=codes.device)
        lp = next_log_probs(rows).float()
        if banned:
            lp[:, list(banned)] = float("-inf")
        top = lp.topk(min(beams, lp.size(1)), dim=1)
        cand = [
            h.extend(y, v, codes)
            for h, values, ids in zip(hyps, top.values.tolist(), top.indices.tolist())
            for v, y in zip(values, ids)
        ]
        mismatch = [c.mismatch(j, target_mean, target_var) for c in cand]
        order = sorted(range(len(cand)), key=lambda i: weight * mismatch[i] - cand[i].log_prob)
        hyps, live = [], []
        for i in order[:beams]:
            score = cand[i].log_prob - weight * mismatch[i]
            result = SearchResult(cand[i].tokens, mismatch[i] <= tol, cand[i].log_prob, mismatch[i])
            (done if result.stopped else live).append((score, result))
            if not result.stopped:
                hyps.append(cand[i])
        if len(done) >= beams or not hyps:
            break
    # Nothing within tolerance: the budget ended the search; return its best unfinished output.
    pool = done or live
    return max(pool, key=lambda p: p[0])[1] if pool else SearchResult([], False, 0.0, math.inf)


def calibrate_tolerance(end: Sequence[float], before: Sequence[float]) -> float:
    """The tol that most often stops exactly at the true end, teacher-forced.

    end[i] = D at the true output length m_i, before[i] = min_(j < m_i) D_j (inf when m_i = 1).
    The rule stops exactly at m_i iff end[i] <= tol < before[i]; the candidates are the end values.
    """
    if not end:
        raise ValueError("calibrate_tolerance needs at least one output")
    pairs = list(zip(end, before))
    return max(sorted(set(end)), key=lambda tol: sum(e <= tol < b for e, b in pairs))


SEARCHES = ("beam", "minimax", "alphabeta")


@torch.no_grad()
def tree_search(
    next_log_probs: Callable[[torch.Tensor], torch.Tensor],
    prompt: Sequence[int],
    codes: torch.Tensor,
    target_mean: torch.Tensor,
    target_var: torch.Tensor,
    *,
    prune: bool = True,
    order: str = "plausibility",
    branch: int = 3,
    budget: int = 200,
    max_new_tokens: int = 32,
    tol: float = 0.0,
    weight: float = 0.0,
    banned: Sequence[int] = (),
) -> tuple[SearchResult, int]:
    """Depth-first search over output stubs: the post's "minmax, alpha-beta pruning, plausibility
    orderings", returning (the result, node expansions = calls of next_log_probs).

    One player chooses every token, so minimax has no min levels: a stub's value is the best score
    log p(o | prompt) - weight * D(o) over the complete outputs o below it, an output being
    complete when the stop rule holds (D_j <= tol). Alpha-beta (`prune`) is then branch and bound:
    log p of a prefix bounds the score of everything below it from above (every token adds
    log p <= 0, and -weight * D <= 0), so a stub whose log p is <= alpha, the best complete score
    so far, is cut; beta stays +inf. Children are the `branch` most probable next tokens, visited
    most probable first (`order="plausibility"`: the ordering that finds good outputs early and so
    cuts most) or by token id (`order="index"`). Stubs end at max_new_tokens; with no complete
    output within `budget` expansions the longest, then best-scored, stub seen is returned."""
    if order not in ("plausibility", "index"):
        raise ValueError(f"order must be 'plausibility' or 'index', got {order!r}")
    zero = codes.new_zeros(codes.size(1))
    stack = [Hypothesis([], 0.0, zero, zero)]
    best: tuple[float, SearchResult] | None = None
    fallback: tuple[tuple[int, float], SearchResult] | None = None
    expansions = 0
    while stack and expansions < budget:
        stub = stack.pop()
        if prune and best is not None and stub.log_prob <= best[0]:
            continue
        rows = torch.tensor([list(prompt) + stub.tokens], device=codes.device)
        lp = next_log_probs(rows).float()[0]
        expansions += 1
        if banned:
            lp[list(banned)] = float("-inf")
        top = lp.topk(min(branch, lp.numel()))
        children = list(zip(top.values.tolist(), top.indices.tolist()))  # most probable first
        if order == "index":
            children.sort(key=lambda c: c[1])
        j, pending = len(stub.tokens) + 1, []
        for log_p, y in children:
            child = stub.extend(y, log_p, codes)
            D = child.mismatch(j, target_mean, target_var)
            score = child.log_prob - weight * D
            result = SearchResult(child.tokens, D <= tol, child.log_prob, D)
            if result.stopped:
                if best is None or score > best[0]:
                    best = (score, result)
                continue
            if fallback is None or (j, score) > fallback[0]:
                fallback = ((j, score), result)
            if j < max_new_tokens:
                pending.append(child)
        stack.extend(reversed(pending))  # the first child is expanded first
    chosen = best or fallback
    return (chosen[1] if chosen else SearchResult([], False, 0.0, math.inf)), expansions
