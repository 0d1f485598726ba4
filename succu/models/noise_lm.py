"""NoiseLM: the model of the "noise embedding LM" post (../shared/seeds/noise-embedding-lm.txt), with
no neural encoder: fixed random codes, noise embeddings, a snap to the nearest code, a single
pseudo-Markov node and mean hierarchies. (succu/models/noise_transformer.py puts the same output
side on a transformer; that is a different question.) The post is loose; this docstring is the
spec, and every reading of an ambiguous sentence is a switch of NoiseLMConfig.

Notation: V tokens, d = code_dim, K noise states; inputs x_0..x_(T-1); position t predicts
y_t = x_(t+1) from x_0..x_t only. Learned are only what the post names: the per-token noise
embeddings nu, the state noise embeddings N_k, B, C, the level choice beta and the key layer.

1. Codes ("weights"): c_y ~ Uniform(0, 1)^d per token, drawn once from a generator seeded by
   `code_seed`, fixed (a buffer). The context embedding is the list c_(x_0)..c_(x_t).
2. Noise embeddings per token (`token_noise`): "for each token in the context embedding, subtract
   that token's noise value from that token's embedding". The encoder embedding of x is
   e_x = c_x - nu_x, with nu in R^(V x d) learned (zero at start: e = c).
3. Mean hierarchies over e_(x_0)..e_(x_t), parameter-free and causal (a pair is stored at its
   later token, so level k at t reads only tokens <= t; a missing partner leaves the value as is):
   L^0_t = e_t, L^(k+1)_t = op(L^k_t, L^k_(t-s_k)) with s_k = 1 (`level_stride` 1: the post's
   overlapping f0 = mean(w, x), g0 = mean(f0, f1)) or 2^k (stride 2: dyadic block means).
   The op: the post calls it mean() and its L0/L1/L2 pyramid only makes sense as one
   (the mean of means of neighbours is a smoothing of the sentence), but writes abs(w-x)/2, which
   is the population standard deviation of {w, x}, not a mean. `pair_op="mean"` is (w + x) / 2
   (default; what the example implies), `pair_op="absdiff"` the literal |w - x| / 2.
   Scattershot subsets (`n_scatter`): subset j is lag 0 plus scatter_size - 1 random lags from
   1..scatter_window-1 (seeded); over its present members we take the mean and, with
   `scatter_stats`, the std and variance ("the mean, std, variance, etc, as well").
   The full embedding (`all_pairs` = W > 1): mean(e_i, e_j) for every pair i < j of the last W
   tokens; on [w, x, y, z] these are the post's mean(w,x), mean(w,y), mean(w,z), mean(x,y),
   mean(x,z), mean(y,z).
4. Which layer: "save the values of whatever layer Lm which could reproduce the correct output the
   best". The mean-type features F^1..F^M (levels, subset means, pair means) are candidates for
   the base of the prediction, b_t = sum_m softmax(beta)_m F^m_t (`level=None`: a learned soft
   choice; argmax beta names the layer kept), or b_t = F^m_t (`level=m`: the hard choice).
5. The single node. A holds a state: a distribution over which of K state noise embeddings N_k is
   used when we loop back to the node. B is the default transition (a learned K x K stochastic
   matrix); C generates new ones from a window of A's prior states (the last `c_window`
   posteriors) and, with `c_features`, the statistics of the scattershot context at the next
   position. `node_c="transition"`: C_t is a K x K stochastic matrix; "noise": C_t is a noise
   embedding Delta_t in R^d that modifies the candidates ("or as a noise embedding"). "We do both,
   and measure which is closest": the path (B or C) is a latent switch with a learned prior omega,
   summed out by the forward recursion; `path_posterior` measures which path explains each next
   token (the "closest"). Candidates: mu_(t,k) = b_t - N_k (and - Delta_t on the C path).
6. Snap. Training uses its relaxation, the distance softmax
       e_t(k, y) = softmax_y(-||mu_(t,k) - c_y||^2 / (2 sigma^2))        (sigma learned),
   whose argmax is the nearest code. Generation uses the hard snap: the most probable candidate
   is replaced by the nearest code (exact, or through the digit-penalty table of the post,
   `lookup="digit_hash"`, succu/nn/lookup.py). The forward recursion (pi_t predictive, phi_t
   posterior after y_t) gives p(y | x_<=t) = sum pi_t(k, path) e_t(k, path, y): the exact
   likelihood of this latent-state model, so the loss is a true NLL.
       pi_0 = softmax(a_0);  phi_t ∝ pi_t * e_t(., y_t) (path summed);
       pi_(t+1) = phi_t (omega B + (1 - omega) C_t)            (transition mode)
       pi_(t+1) = phi_t B, the path drawn afresh with prior (omega, 1 - omega)   (noise mode).
7. Key layer and stop rule ("a middle layer, the key ... maps from the variance of the input
   (query) to the variance and mean of the output (value)"): a one-hidden-layer map (the hidden
   layer is the key) from the running mean and variance of the prompt's codes to the predicted
   mean and variance of the output's codes; decoding stops when the output's statistics come
   within a tolerance (succu/nn/noise.py: stub_search, tree_search).

No KV cache: the node's state spans the prefix; generation recomputes the window each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from succu.nn.lookup import Lookup
from succu.nn.noise import (
    CodeSnap,
    NoiseLMOutput,
    StopHead,
    make_codes,
    node_filter,
    scatter_lags,
)

NODE_C = ("transition", "noise", "off")


@dataclass
class NoiseLMConfig:
    """The write-up's model: codes, noise embeddings, hierarchies, the node and the snap.

    Attributes:
        vocab_size: vocabulary size V (linked from the datamodule).
        block_size: context length (linked from the datamodule).
        code_dim: code width d.
        centred_codes: codes ~ Uniform(-1/2, 1/2) instead of the post's Uniform(0, 1).
        code_seed: seed of the codes.
        token_noise: a learned noise embedding per token, subtracted from its code.
        n_levels: pair-op hierarchy levels above L^0 (0: none).
        pair_op: "mean" ((w + x) / 2, what the post's pyramid implies) or "absdiff"
            (|w - x| / 2, the formula the post writes).
        level_stride: 1 (overlapping pairs, the post's example) or 2 (dyadic blocks).
        n_scatter: scattershot subsets (0: none).
        scatter_window: subsets draw their lags from the last scatter_window tokens.
        scatter_size: tokens per subset (lag 0 included).
        scatter_seed: seed of the subsets.
        scatter_stats: besides each subset's mean, its std and variance (inputs of C).
        all_pairs: the full embedding: means of all pairs of the last all_pairs tokens (0 or 1:
            none).
        level: None: a learned soft choice of the layer Lm; m: use feature m only (0 is e_t).
        n_noise: K state noise embeddings, the states of the node.
        node_b: the default transition B (False: only C moves the node).
        node_c: what C generates: "transition" (a K x K matrix), "noise" (a noise embedding
            Delta_t on the candidates) or "off".
        c_window: prior states of the node that C reads.
        c_features: C also reads the scattershot statistics.
        init_sigma: initial sigma of the distance softmax (learned).
        key_dim: width of the key (middle) layer of the stop rule.
        lookup: hard-snap backend for generation (matmul: exact; digit_hash: the post's table).
    """

    vocab_size: int = 0
    block_size: int = 64
    code_dim: int = 64
    centred_codes: bool = False
    code_seed: int = 0
    token_noise: bool = True
    n_levels: int = 3
    pair_op: str = "mean"
    level_stride: int = 1
    n_scatter: int = 4
    scatter_window: int = 8
    scatter_size: int = 3
    scatter_seed: int = 0
    scatter_stats: bool = True
    all_pairs: int = 4
    level: int | None = None
    n_noise: int = 4
    node_b: bool = True
    node_c: str = "transition"
    c_window: int = 4
    c_features: bool = True
    init_sigma: float = 1.0
    key_dim: int = 64
    lookup: str = "matmul"

    def __post_init__(self) -> None:
        checks = [
            (self.block_size >= 1 and self.code_dim >= 1, "block_size and code_dim must be >= 1"),
            (
                self.pair_op in ("mean", "absdiff"),
                f"pair_op must be 'mean' or 'absdiff', got {self.pair_op!r}",
            ),
            (self.level_stride in (1, 2), f"level_stride must be 1 or 2, got {self.level_stride}"),
            (self.node_c in NODE_C, f"node_c must be one of {NODE_C}, got {self.node_c!r}"),
            (self.n_noise >= 1, f"n_noise must be >= 1, got {self.n_noise}"),
            (
                min(self.n_levels, self.n_scatter, self.all_pairs) >= 0,
                "n_levels, n_scatter and all_pairs must be >= 0",
            ),
            (self.c_window >= 1 and self.key_dim >= 1, "c_window and key_dim must be >= 1"),
            (
                self.node_b or self.node_c == "transition",
                "node_b=False needs node_c='transition': something must move the node",
            ),
            (
                not self.n_scatter or 1 <= self.scatter_size <= self.scatter_window,
                f"scatter_size must be in [1, scatter_window={self.scatter_window}], got {self.scatter_size}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.level is not None and not 0 <= self.level < self.n_means:
            raise ValueError(f"level must be None or in [0, {self.n_means - 1}], got {self.level}")

    @property
    def n_pairs(self) -> int:
        return self.all_pairs * (self.all_pairs - 1) // 2 if self.all_pairs > 1 else 0

    @property
    def n_means(self) -> int:
        """Mean-type features F^0..F^(M-1): e_t, the levels, the subset means, the pair means."""
        return 1 + self.n_levels + self.n_scatter + self.n_pairs

    @property
    def n_stats(self) -> int:
        """Feature vectors C reads: the mean-type ones, and each subset's std and variance."""
        return self.n_means + (2 * self.n_scatter if self.scatter_stats else 0)


# ---- the parameter-free context --------------------------------------------------------------
def pair_op(a: torch.Tensor, b: torch.Tensor, op: str) -> torch.Tensor:
    return 0.5 * (a + b) if op == "mean" else 0.5 * (a - b).abs()


def levels(e: torch.Tensor, n_levels: int, stride: int, op: str) -> list[torch.Tensor]:
    """[L^0 = e, L^1, .., L^n], each (B, T, d); a partner before the window leaves L^k as is."""
    out = [e]
    for k in range(n_levels):
        s, prev = (1 if stride == 1 else 2**k), out[-1]
        if s >= prev.size(1):  # no position has a partner
            out.append(prev)
            continue
        out.append(torch.cat([prev[:, :s], pair_op(prev[:, s:], prev[:, :-s], op)], dim=1))
    return out


def subset_stats(e: torch.Tensor, member: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean and (population) variance of each scattershot subset's present members (lags o <= t),
    as lists of (B, T, d): sums of shifted copies (cheaper than a convolution over B * d rows)."""
    T = e.size(1)
    zero = torch.zeros_like(e)
    used = sorted({o for row in member.nonzero().tolist() for o in row[1:]})
    shifted = {o: lag(e, o, zero) for o in used}
    t = torch.arange(T, device=e.device, dtype=e.dtype).view(1, T, 1)
    means, variances = [], []
    for row in member:
        lags = row.nonzero().flatten().tolist()
        count = sum((t >= o).to(e.dtype) for o in lags)  # members present at t (lag 0 always)
        mean = sum(shifted[o] for o in lags) / count
        square = sum(shifted[o] * shifted[o] for o in lags) / count
        means.append(mean)
        variances.append((square - mean * mean).clamp(min=0.0))
    return means, variances


def lag(e: torch.Tensor, i: int, fallback: torch.Tensor) -> torch.Tensor:
    """e_(t-i) along dim 1, and fallback_t where t - i < 0."""
    if i == 0:
        return e
    if i >= e.size(1):
        return fallback
    return torch.cat([fallback[:, :i], e[:, :-i]], dim=1)


def all_pair_means(e: torch.Tensor, window: int) -> torch.Tensor:
    """mean(e_(t-i), e_(t-j)) for pairs of lags i > j of the last `window` tokens, oldest first
    (on [w, x, y, z]: (w,x), (w,y), (w,z), (x,y), (x,z), (y,z)); (B, T, P, d). A token before the
    window start is replaced by the later token of its pair (the pair's mean is then that token)."""
    lags = [lag(e, j, e) for j in range(window)]  # lags[j]: e_(t-j), e_t before the start
    out = []
    for i in range(window - 1, 0, -1):  # the older token of the pair: lag i
        for j in range(i - 1, -1, -1):
            out.append(0.5 * (lag(e, i, lags[j]) + lags[j]))
    return torch.stack(out, dim=2)


def log_distance_softmax(
    mu: torch.Tensor, codes: torch.Tensor, log_sigma: torch.Tensor
) -> torch.Tensor:
    """log softmax_y(-||mu - c_y||^2 / (2 sigma^2)) over the last axis of mu (..., d) -> (..., V)."""
    scores = mu @ codes.t() - 0.5 * (codes * codes).sum(-1)  # ||mu||^2 is the same for every y
    return (scores * torch.exp(-2.0 * log_sigma)).log_softmax(-1)


class NoiseLM(nn.Module, CodeSnap):
    def __init__(self, cfg: NoiseLMConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {cfg.vocab_size}")
        self.cfg = cfg
        K, d = cfg.n_noise, cfg.code_dim
        self.register_buffer(
            "codes", make_codes(cfg.vocab_size, d, cfg.code_seed, cfg.centred_codes)
        )
        member = scatter_lags(cfg.n_scatter, cfg.scatter_window, cfg.scatter_size, cfg.scatter_seed)
        self.register_buffer("scatter_member", member)
        self.token_noise = nn.Parameter(torch.zeros(cfg.vocab_size, d)) if cfg.token_noise else None
        self.noise = nn.Parameter(torch.randn(K, d) * 0.1)  # N_k
        self.level_logits = nn.Parameter(torch.zeros(cfg.n_means))  # beta
        # B starts sticky (the node holds its state), omega at 1/2 (both paths alike).
        self.trans_logits = nn.Parameter(torch.eye(K)) if cfg.node_b else None
        self.init_logits = nn.Parameter(torch.zeros(K))
        self.path_logit = (
            nn.Parameter(torch.zeros(())) if cfg.node_b and cfg.node_c != "off" else None
        )
        c_out = K * K if cfg.node_c == "transition" else d
        self.c_states = nn.Linear(cfg.c_window * K, c_out) if cfg.node_c != "off" else None
        self.c_stats = (
            nn.Linear(cfg.n_stats * d, c_out, bias=False)
            if cfg.node_c != "off" and cfg.c_features
            else None
        )
        for layer in (self.c_states, self.c_stats):
            if layer is not None:
                nn.init.normal_(layer.weight, std=0.02)
        if self.c_states is not None:
            nn.init.zeros_(self.c_states.bias)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(cfg.init_sigma)))
        self.stop_head = StopHead(d, d, hidden=cfg.key_dim)
        self._lookup: tuple[tuple, Lookup] | None = None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- context ----------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Encoder embeddings e_x = c_x - nu_x, (B, T, d)."""
        e = self.codes[input_ids]
        return e - self.token_noise[input_ids] if self.token_noise is not None else e

    def feature_lists(self, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """([F^0..F^(M-1)]: the mean-type features; [the subsets' stds, then variances]), each
        (B, T, d). C reads both lists, in that order."""
        cfg = self.cfg
        if input_ids.size(1) > cfg.block_size:
            raise ValueError(
                f"sequence of {input_ids.size(1)} tokens exceeds block_size={cfg.block_size}"
            )
        e = self.embed(input_ids)
        means = levels(e, cfg.n_levels, cfg.level_stride, cfg.pair_op)
        spread = []
        if cfg.n_scatter:
            s_mean, s_var = subset_stats(e, self.scatter_member)
            means += s_mean
            if cfg.scatter_stats:
                spread = [*(v.clamp(min=1e-12).sqrt() for v in s_var), *s_var]
        if cfg.n_pairs:
            means += list(all_pair_means(e, cfg.all_pairs).unbind(2))
        return means, spread

    def features(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(means (B, T, M, d), stats (B, T, S, d)): `feature_lists` stacked, for analysis."""
        means, spread = self.feature_lists(input_ids)
        return torch.stack(means, 2), torch.stack(means + spread, 2)

    def context(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(b_t (B, T, d), the statistics part of C (B, T, c_out) or None), summed feature by
        feature: the (B, T, S, d) stack is never built (it would dominate a training step)."""
        means, spread = self.feature_lists(input_ids)
        if self.cfg.level is not None:
            base = means[self.cfg.level]
        else:
            weights = self.level_logits.softmax(0)
            base = sum(w * f for w, f in zip(weights.unbind(0), means))
        if self.c_stats is None:
            return base, None
        d = self.cfg.code_dim
        parts = self.c_stats.weight.t().split(d, dim=0)  # one (d, c_out) slice per feature
        return base, sum(f @ w for f, w in zip(means + spread, parts))

    def best_level(self) -> int:
        """argmax beta: the layer Lm the soft choice keeps."""
        return self.cfg.level if self.cfg.level is not None else int(self.level_logits.argmax())

    # ---- the node ---------------------------------------------------------------------------
    def log_paths(self) -> torch.Tensor:
        """log (omega, 1 - omega) over paths (B, C); one path when only one of them exists."""
        if self.path_logit is None:
            return torch.zeros(1, device=self.init_logits.device)
        return torch.stack([F.logsigmoid(self.path_logit), F.logsigmoid(-self.path_logit)])

    def moves(self, B: int, T: int, c_stat: torch.Tensor | None):
        """One move of the node on its own, for inspection: a function (phi_t, window, t) ->
        pi_(t+1), in probabilities. window: the last c_window posteriors (B, W*K); C reads it and
        the statistics at t + 1. The filters (`recursion`, `recursion_noise`) make the same move
        for all rows and positions themselves."""
        K = self.cfg.n_noise
        if self.cfg.node_c != "transition":
            move_b = self.trans_logits.softmax(-1)
            return lambda phi, window, t: phi @ move_b
        # C_t's logits at t + 1 = window @ W^T + (bias + statistics part), one addmm per step.
        shift = self.c_states.bias + (c_stat if c_stat is not None else 0.0)
        shift = shift.expand(B, T, K * K).unbind(1)
        weight = self.c_states.weight.t()
        if self.trans_logits is None:
            omega_b, keep = None, None
        else:  # omega B + (1 - omega) C_t
            omega = torch.sigmoid(self.path_logit)
            omega_b, keep = omega * self.trans_logits.softmax(-1), 1 - omega

        def step(phi: torch.Tensor, window: torch.Tensor, t: int) -> torch.Tensor:
            move = torch.addmm(shift[t + 1], window, weight).view(-1, K, K).softmax(-1)
            if omega_b is not None:
                move = torch.addcmul(omega_b, keep, move)
            return torch.bmm(phi.unsqueeze(1), move).squeeze(1)

        return step

    def c_noise(self, window: torch.Tensor, c_stat: torch.Tensor | None) -> torch.Tensor:
        """Delta_t (B, d): C as a noise embedding, from the prior states and the statistics at t."""
        return self.c_states(window) + (c_stat if c_stat is not None else 0.0)

    def outputs(self, input_ids: torch.Tensor) -> NoiseLMOutput:
        """One pass: the features, the candidates, and the forward recursion of section 6."""
        base, c_stat = self.context(input_ids)
        mu_b = base.unsqueeze(2) - self.noise  # (B, T, K, d)
        log_emit_b = log_distance_softmax(mu_b, self.codes, self.log_sigma)
        if self.cfg.node_c == "noise":
            log_pi, log_emit, mu, path_b = self.recursion_noise(input_ids, mu_b, log_emit_b, c_stat)
        else:
            log_pi, log_emit, mu, path_b = (
                self.recursion(input_ids, log_emit_b, c_stat),
                log_emit_b,
                mu_b,
                None,
            )
        stop_mean, stop_var = self.stop_head(self.codes[input_ids])  # fixed codes: no LM gradient
        log_probs = torch.logsumexp(log_pi.unsqueeze(-1) + log_emit, dim=2)
        return NoiseLMOutput(log_probs, log_pi, log_emit, mu, stop_mean, stop_var, path_b)

    def recursion(
        self, input_ids: torch.Tensor, log_emit: torch.Tensor, c_stat: torch.Tensor | None
    ) -> torch.Tensor:
        """log pi_t (B, T, K) when C generates transitions (or is off): emissions do not depend on
        the node, so only the K-state filter runs position by position, as one autograd node with
        its adjoint written out (succu/nn/noise.py: node_filter)."""
        (B, T), K = input_ids.shape, self.cfg.n_noise
        # y_t at every position but the last, which reads token 0 and is dropped: gathering from
        # the whole log_emit spares its backward a zero-filled (B, T, K, V) copy for the slice.
        obs = F.pad(input_ids[:, 1:], (0, 1))[:, :, None, None].expand(-1, -1, K, 1)
        log_emit_obs = log_emit.gather(-1, obs).squeeze(-1)[:, :-1]  # (B, T - 1, K)
        # Scaled per row (phi is normalised anyway), floored so a row never becomes all zeros.
        emit_obs = (log_emit_obs - log_emit_obs.amax(-1, keepdim=True)).exp().clamp(min=1e-30)
        pi0, window = self.init_logits.softmax(-1), self.cfg.c_window
        if self.cfg.node_c != "transition":
            pis = node_filter(emit_obs, pi0, window, move_b=self.trans_logits.softmax(-1))
        else:
            # C_t's logits at t + 1 = window @ W^T + (bias + statistics part at t + 1).
            shift = self.c_states.bias + (c_stat[:, 1:] if c_stat is not None else 0.0)
            shift = shift.expand(B, T - 1, K * K)
            move_b = keep = None
            if self.trans_logits is not None:  # omega B + (1 - omega) C_t
                omega = torch.sigmoid(self.path_logit)
                move_b, keep = omega * self.trans_logits.softmax(-1), 1 - omega
            pis = node_filter(emit_obs, pi0, window, move_b, shift, self.c_states.weight.t(), keep)
        return pis.clamp(min=1e-30).log()

    def recursion_noise(
        self,
        input_ids: torch.Tensor,
        mu_b: torch.Tensor,
        log_emit_b: torch.Tensor,
        c_stat: torch.Tensor | None,
    ):
        """C as a noise embedding: the C-path candidates mu_b - Delta_t depend on the node's prior
        states, so they are made inside the filter. Candidates are (state, path), index 2 k + p.
        The loop makes only what the next state needs (Delta_t, the C path's emissions and the
        joint of y_t); the candidates, priors and path posteriors are assembled after it."""
        (B, T), K = input_ids.shape, self.cfg.n_noise
        log_path = self.log_paths()
        log_pi = self.init_logits.log_softmax(-1).expand(B, K)
        window = log_pi.new_zeros(B, self.cfg.c_window * K)
        move_b = self.trans_logits.softmax(-1)
        # log_distance_softmax's pieces that do not depend on the candidates, made once.
        codes_t, half_norms = self.codes.t(), 0.5 * (self.codes * self.codes).sum(-1)
        scale = torch.exp(-2.0 * self.log_sigma)
        obs = F.pad(input_ids[:, 1:], (0, 1))[:, :, None, None].expand(-1, -1, K, 1)
        log_emit_b_obs = log_emit_b.gather(-1, obs).unbind(1)  # (B, K, 1) at y_t; last unused
        log_pis, deltas, emits_c, joints = [], [], [], []
        for t in range(T):
            log_pis.append(log_pi)
            delta = self.c_noise(window, None if c_stat is None else c_stat[:, t])
            deltas.append(delta)
            mu_c = mu_b[:, t] - delta.unsqueeze(1)
            log_emit_c = ((mu_c @ codes_t - half_norms) * scale).log_softmax(-1)  # (B, K, V)
            emits_c.append(log_emit_c)
            if t == T - 1:
                break
            observed = torch.cat([log_emit_b_obs[t], log_emit_c.gather(-1, obs[:, t])], -1)
            joint = log_pi.unsqueeze(2) + log_path + observed  # (B, K, 2)
            joints.append(joint)
            phi = joint.logsumexp(-1).softmax(-1)
            window = torch.cat([window[:, K:], phi], dim=1)
            log_pi = (phi @ move_b).clamp(min=1e-30).log()
        priors = (torch.stack(log_pis, 1).unsqueeze(3) + log_path).flatten(2)  # (B, T, 2K)
        log_emit = torch.stack([log_emit_b, torch.stack(emits_c, 1)], 3).flatten(2, 3)
        mu_c = mu_b - torch.stack(deltas, 1).unsqueeze(2)
        mus = torch.stack([mu_b, mu_c], 3).flatten(2, 3)  # (B, T, 2K, d)
        # Which path explains y_t: the post's "closest".
        by_path = torch.stack(joints, 1).logsumexp(2) if joints else priors.new_zeros(B, 0, 2)
        return priors, log_emit, mus, (by_path[..., 0] - by_path.logsumexp(-1)).exp()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """log p(y | x_<=t), (B, T, V): normalised log-probabilities, used as the logits."""
        return self.outputs(input_ids).log_probs

    # ---- the stop rule (the hard snap is CodeSnap's: lookup, snap, snap_decode) ---------------
    @torch.no_grad()
    def stop_target(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted output code (mean, variance) after each row's last position, (B, d) x 2."""
        mean, var = self.stop_head(self.codes[input_ids])
        return mean[:, -1], var[:, -1]
