"""NoiseTransformerLM: the noise-embedding LM's output side on top of a transformer encoder.

This is not the write-up's model (that is succu/models/noise_lm.py, which has no neural encoder):
here the post's codes, scattershot context, noise states and snap sit on a GPT encoder, to ask
whether those pieces help a transformer. This docstring is its spec. Notation: V tokens, n = n_embd, d = code_dim,
K noise states, inputs x_0..x_{T-1}; position t predicts y_t = x_{t+1}, from x_0..x_t only.

1. Codes (the post's random "weights"). C in R^(V x d), rows c_y ~ Uniform(0, 1)^d, drawn once
   from a generator seeded by `code_seed` and kept as a buffer (so they travel in the checkpoint).
   `centred_codes`: c_y ~ Uniform(-1/2, 1/2)^d. `trainable_codes`: C is a parameter (ablation).

2. Scattershot context: fixed (parameter-free) causal features of the codes c_{x_0}..c_{x_t}.
   Levels:  L^0_t = c_{x_t},   L^(k+1)_t = (L^k_t + L^k_(t-s_k)) / 2,   k = 0..n_levels-1, with
     stride 1: s_k = 1, the post's overlapping pair means (f0 = mean(w, x), g0 = mean(f0, f1));
               L^2_t = (c_{t-2} + 2 c_{t-1} + c_t) / 4: binomial weights over k + 1 tokens;
     stride 2: s_k = 2^k, non-overlapping pairs of pairs (mean(w, x), mean(y, z) -> L^2), taken
               at every phase: L^k_t = mean of the 2^k codes ending at t (dilated, as WaveNet).
   The post put mean(w, x) between w and x; we store it at the later token, which is what makes
   every level causal. Where t - s_k < 0 the partner does not exist and L^(k+1)_t = L^k_t.
   Scattershot subsets: j = 1..n_scatter, each a set O_j = {0} + (scatter_size - 1) lags drawn
   without replacement from {1..scatter_window-1} by a generator seeded with `scatter_seed`;
     S^j_t = mean over {o in O_j : o <= t} of c_{x_(t-o)}       (lags are >= 0: causal; lag 0 is
   always in, so the mean is never empty; it is the post's [w, y, z] chain ending at now).

3. Encoder. u_t = [L^0_t, .., L^n_t, S^1_t, .., S^m_t] in R^((1+n+m) d);
   h^0_t = W_in u_t + p_t (learned positions); h^l = GPT pre-LN causal blocks; h_t = LN_f(h^L_t).
   The key layer is h^kappa, the output of block kappa = `key_layer` (default L // 2, at least 1).

4. Noise embeddings. q_t = P h_t + b in R^d; K learned noise embeddings N_k in R^d; candidates
     mu_(t,k) = q_t - N_k                 (the post: subtract the noise from the embedding).

5. Snap. Emission of state k: e_t(k, y) = softmax_y(-||mu_(t,k) - c_y||^2 / (2 sigma^2))
                                        = softmax_y((mu_(t,k) . c_y - ||c_y||^2 / 2) / sigma^2),
   since ||mu||^2 is the same for every y; sigma = exp(log_sigma) is learned. Decoding one candidate
   snaps it to the nearest code, argmax_y (q . c_y - ||c_y||^2 / 2): one matmul (succu.nn.lookup
   has the backends), which is also argmax_y e_t(k, y) because softmax is monotone.

6. The single node. The post's node A, its self-link B (a transition matrix) and link C (a
   noise embedding) become a hidden Markov chain over which noise embedding is used: z_t in
   {1..K}, z_0 ~ pi_0 = softmax(a_0), z_(t+1) | z_t ~ A[z_t, :], A = softmax_rows(A_hat), and
   y_t | z_t ~ e_t(z_t, .). The post's "do both and measure which is closest" is the sum over
   states, weighted by the forward recursion (predictive state before y_t is seen):
     pi_0,    phi_t(i) = pi_t(i) e_t(i, y_t) / sum_k pi_t(k) e_t(k, y_t),    pi_(t+1) = phi_t A.
   phi_t uses y_t = x_(t+1), an input of position t + 1, so pi_t depends on x_0..x_t: causal. Then
     p(y | x_<=t) = sum_k pi_t(k) e_t(k, y),
     sum_t log p(y_t | x_<=t)
         = log sum_(z_0..z_(T-1)) pi_0(z_0) prod_t A[z_t, z_(t+1)] prod_t e_t(z_t, y_t)
   (chain rule): the exact likelihood of the HMM. The recursion runs in log space.
   `forward` returns log p(y | x_<=t), (B, T, V), as its "logits": they already normalise, so the
   base module's cross-entropy is exactly the negative log-likelihood. With K = 1 and no levels or
   subsets the model is a plain distance-softmax LM: log_softmax_y(-||q_t - N_1 - c_y||^2 / 2 s^2).

7. Loss (in the Lightning module): NLL + lambda sum_k r_t(k) ||mu_(t,k) - c_(y_t)||^2 / d, with
   r_t = phi_t detached (which candidate explains y_t: the post's "closest" candidate).

8. Stop rule (the post's key, query and value). Key statistics at t: the running mean and
   variance of the key layer over positions s = 0..t, m_t = mean_s h^kappa_s and
   v_t = mean_s (h^kappa_s)^2 - m_t^2. A head g (LN, MLP) maps [m_t, v_t] to the predicted mean
   mu_hat_t and variance v_hat_t = softplus(.), both in R^d, of the codes of the output that
   follows t, up to but not including the next EOS. It is trained at every position with an EOS
   ahead, by the same mismatch that decoding uses,
     D(m, v; mu_hat, v_hat) = ||m - mu_hat||^2 / d + ||v - v_hat||^2 / d,
   reading the key layer detached by default (`stop_detach`), so the stop head never changes the LM.
   Decoding: the output o_1..o_j so far has code mean m_j and variance v_j; stop at the first j with
   D_j <= tol (`calibrate_tolerance` picks tol from teacher-forced training outputs). `stub_search`
   keeps the B best partial outputs by log p(o | prompt) - weight * D_j and finishes a hypothesis
   when D_j <= tol. Why it is hard: the m-th token moves the running mean by (c_m - m_(m-1)) / m,
   so for independent codes D between lengths m - 1 and m is only about Var(c) / m^2 (1 / (12 m^2)
   for Uniform(0, 1) codes: 0.0023 at m = 6), and the head must predict the output's mean more
   precisely than that to stop exactly.

Control (`head="softmax"`, K = 1): the same inputs and encoder with log p = log_softmax(W h_t), so
a comparison isolates the snap and the noise states from the scattershot inputs.

No KV cache: pi_t, the levels and the subsets each carry prefix state, and the base module simply
recomputes the window at each generated token (`new_kv_cache` is deliberately absent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from succu.models.gpt import GPT, INIT_STD, Block, GPTConfig
from succu.nn.lookup import Lookup
from succu.nn.noise import (
    CodeSnap,
    NoiseLMOutput,
    StopHead,
    distance_log_softmax,
    hmm_predictive,
    make_codes,
    mixture_log_probs,
    pair_levels,
    scatter_lags,
    scatter_means,
)


@dataclass
class NoiseTransformerConfig(GPTConfig):
    """GPTConfig's sizes for the encoder (smaller by default), then the codes, the context
    hierarchy, the noise states and the snap.

    Attributes:
        code_dim: code width d.
        centred_codes: codes ~ Uniform(-1/2, 1/2) instead of Uniform(0, 1).
        trainable_codes: learn the codes (ablation; the design keeps them fixed).
        code_seed: seed of the codes.
        n_levels: pair-mean hierarchy levels above L^0 (0: no hierarchy).
        level_stride: 1 (overlapping pairs) or 2 (dilated, dyadic windows).
        n_scatter: scattershot subsets (0: none).
        scatter_window: subsets draw their lags from the last scatter_window tokens.
        scatter_size: tokens per subset (lag 0 included).
        scatter_seed: seed of the subsets.
        n_noise: K noise embeddings (states of the HMM).
        init_sigma: initial sigma of the distance softmax (learned).
        key_layer: the block whose running statistics feed the stop rule (None: n_layer // 2).
        stop_detach: the stop head reads the key layer without sending gradients into it.
        lookup: snap backend (matmul, faiss_flat, faiss_hnsw, digit_hash).
        head: "snap" (the model) or "softmax" (the control: same inputs and encoder, a softmax
            head, n_noise must be 1).
    """

    n_layer: int = 2  # a smaller encoder than GPTConfig's default
    n_embd: int = 64
    code_dim: int = 64
    centred_codes: bool = False
    trainable_codes: bool = False
    code_seed: int = 0
    n_levels: int = 3
    level_stride: int = 1
    n_scatter: int = 4
    scatter_window: int = 8
    scatter_size: int = 3
    scatter_seed: int = 0
    n_noise: int = 4
    init_sigma: float = 1.0
    key_layer: int | None = None
    stop_detach: bool = True
    lookup: str = "matmul"
    head: str = "snap"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in ("snap", "softmax"):
            raise ValueError(f"head must be 'snap' or 'softmax', got {self.head!r}")
        if self.head == "softmax" and self.n_noise != 1:
            raise ValueError("the softmax head is the control without noise states: set n_noise=1")
        if self.level_stride not in (1, 2):
            raise ValueError(f"level_stride must be 1 or 2, got {self.level_stride}")
        if self.n_noise < 1 or self.n_levels < 0 or self.n_scatter < 0:
            raise ValueError("n_noise must be >= 1 and n_levels, n_scatter >= 0")
        if self.n_scatter and not 1 <= self.scatter_size <= self.scatter_window:
            raise ValueError(
                f"scatter_size must be in [1, scatter_window={self.scatter_window}], "
                f"got {self.scatter_size}"
            )
        key = self.resolved_key_layer
        if self.n_layer < 1 or not 1 <= key <= self.n_layer:
            raise ValueError(f"key_layer must be in [1, n_layer={self.n_layer}], got {key}")

    @property
    def resolved_key_layer(self) -> int:
        return self.key_layer if self.key_layer is not None else max(1, self.n_layer // 2)

    @property
    def n_features(self) -> int:
        """Code-width slots read by the encoder: L^0..L^n and the subsets."""
        return 1 + self.n_levels + self.n_scatter


class NoiseTransformerLM(nn.Module, CodeSnap):
    def __init__(self, cfg: NoiseTransformerConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {cfg.vocab_size}")
        self.cfg = cfg
        codes = make_codes(cfg.vocab_size, cfg.code_dim, cfg.code_seed, cfg.centred_codes)
        if cfg.trainable_codes:
            self.codes = nn.Parameter(codes)
        else:
            self.register_buffer("codes", codes)
        member = scatter_lags(cfg.n_scatter, cfg.scatter_window, cfg.scatter_size, cfg.scatter_seed)
        self.register_buffer("scatter_member", member)
        self.w_in = nn.Linear(cfg.n_features * cfg.code_dim, cfg.n_embd, bias=cfg.bias)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))  # a GPTConfig
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.code_dim)  # P, b
        self.noise = nn.Parameter(torch.randn(cfg.n_noise, cfg.code_dim) * 0.1)  # N_k
        # Transitions start sticky (self-link favoured), so the chain has a memory from step one.
        self.trans_logits = nn.Parameter(torch.eye(cfg.n_noise))
        self.init_logits = nn.Parameter(torch.zeros(cfg.n_noise))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(cfg.init_sigma)))
        self.stop_head = StopHead(cfg.n_embd, cfg.code_dim)
        # The control: the same encoder and inputs with a plain softmax head (no codes on output).
        self.lm_head = (
            nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False) if cfg.head == "softmax" else None
        )
        self._init_weights(cfg)
        self._lookup: tuple[tuple, Lookup] | None = None

    def _init_weights(self, cfg: NoiseTransformerConfig) -> None:
        """GPT-2 initialisation for the encoder; q starts at the code centroid (near-uniform p)."""
        for module in [self.w_in, self.wpe, *self.blocks, self.stop_head, self.lm_head]:
            if module is None:
                continue
            module.apply(GPT._init_weights)
        for name, p in self.blocks.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.c_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * cfg.n_layer))
        nn.init.normal_(self.proj.weight, std=INIT_STD)
        with torch.no_grad():
            self.proj.bias.copy_(self.codes.mean(0))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- the pieces, each usable on its own (tests, analysis) ---------------------------------
    def features(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """[L^0, .., L^n, S^1, .., S^m], each (B, T, d): the scattershot context."""
        cfg = self.cfg
        feats = pair_levels(self.codes[input_ids], cfg.n_levels, cfg.level_stride)
        if cfg.n_scatter:
            feats += list(scatter_means(feats[0], self.scatter_member).unbind(2))
        return feats

    def encode(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, key): final states LN_f(h^L) and the key layer h^kappa, both (B, T, n)."""
        T = input_ids.size(1)
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size={self.cfg.block_size}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.w_in(torch.cat(self.features(input_ids), -1)) + self.wpe(pos))
        key = x
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i == self.cfg.resolved_key_layer:
                key = x
        return self.ln_f(x), key

    def transition(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log A (K, K), log pi_0 (K,))."""
        return self.trans_logits.log_softmax(-1), self.init_logits.log_softmax(-1)

    def outputs(self, input_ids: torch.Tensor) -> NoiseLMOutput:
        """Everything one pass computes (the module's losses need more than the log-probs)."""
        h, key = self.encode(input_ids)
        q = self.proj(h)
        mu = q.unsqueeze(2) - self.noise
        if self.lm_head is not None:
            log_emit = self.lm_head(h).log_softmax(-1).unsqueeze(2)  # (B, T, 1, V)
        else:
            log_emit = distance_log_softmax(q, self.noise, self.codes, self.log_sigma)
        if self.cfg.n_noise == 1:
            log_pi = log_emit.new_zeros(*input_ids.shape, 1)
        else:
            obs = input_ids[:, 1:, None, None].expand(-1, -1, self.cfg.n_noise, 1)
            log_emit_obs = log_emit[:, :-1].gather(-1, obs).squeeze(-1)
            log_pi = hmm_predictive(log_emit_obs, *self.transition())
        stop_mean, stop_var = self.stop_head(key.detach() if self.cfg.stop_detach else key)
        return NoiseLMOutput(
            mixture_log_probs(log_pi, log_emit), log_pi, log_emit, mu, stop_mean, stop_var
        )

    def forward(
        self,
        input_ids: torch.Tensor,
    ) -> torch.Tensor:
        """log p(y | x_<=t), (B, T, V): normalised log-probabilities, used as the logits.

        There is no KV cache (the HMM state spans the prefix): generation recomputes.
        """
        return self.outputs(input_ids).log_probs

    # ---- the stop rule (the hard snap is CodeSnap's: lookup, snap, snap_decode) ---------------
    @torch.no_grad()
    def stop_target(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted output code (mean, variance) after each row's last position, (B, d) x 2."""
        h, key = self.encode(input_ids)
        mean, var = self.stop_head(key)
        return mean[:, -1], var[:, -1]


