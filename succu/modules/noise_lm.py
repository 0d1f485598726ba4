"""NoiseLMModule: the noise-embedding LM in Lightning: NLL plus its two auxiliary losses, and
decoding stopped by the write-up's key rule (see succu/models/noise_lm.py for the maths)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable

from succu.models.noise_lm import (
    NoiseLM,
    NoiseLMConfig,
    NoiseLMOutput,
    SearchResult,
    stop_mismatch,
    stub_search,
    suffix_code_stats,
)
from succu.modules.base import IGNORE_INDEX, LanguageModule

# Parameters that are not weights of a map: decaying them would pull codes, noise offsets, the
# transition logits (towards uniform) and sigma towards zero, which is not regularisation.
NO_DECAY = ("codes", "noise", "trans_logits", "init_logits", "log_sigma")


class NoiseLMModule(LanguageModule):
    """NoiseLM: fixed random codes, scattershot context, K noise embeddings under an HMM, snap.

    Args:
        vocab_size: vocabulary size (linked from the datamodule).
        block_size: longest sequence (linked from the datamodule).
        n_layer: encoder transformer blocks.
        n_head: attention heads per block.
        n_embd: encoder width n.
        dropout: dropout on the encoder input, attention and MLP outputs.
        bias: biases in the encoder's Linear and LayerNorm layers.
        code_dim: code width d.
        centred_codes: codes ~ Uniform(-1/2, 1/2) instead of Uniform(0, 1).
        trainable_codes: learn the codes (ablation; the write-up keeps them fixed).
        code_seed: seed of the codes.
        n_levels: pair-mean hierarchy levels above L^0 (0: no hierarchy).
        level_stride: 1 (overlapping pairs, the write-up's) or 2 (dilated, dyadic windows).
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
        dist_loss_weight: lambda of the posterior-weighted ||mu - c_y||^2 / d term (0: exact NLL).
        stop_loss_weight: weight of the stop head's mismatch loss.
        stop_tol: stop-rule tolerance on the mismatch D (`calibrate_stop` sets it from data).
        stop_weight: weight of D in the stub search's score (None: 1 / stop_tol).
        optimizer: optimizer factory; parameters arrive as two groups, matrices (decayed with the
            optimizer's own weight_decay) and vectors, gains, codes, noise and HMM logits (not).
        warmup_steps: linear learning-rate warmup steps before the cosine decay.
        min_lr_ratio: the cosine ends at this fraction of the peak learning rate.
    """

    def __init__(
        self,
        vocab_size: int = 0,
        block_size: int = 64,
        n_layer: int = 2,
        n_head: int = 4,
        n_embd: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
        code_dim: int = 64,
        centred_codes: bool = False,
        trainable_codes: bool = False,
        code_seed: int = 0,
        n_levels: int = 3,
        level_stride: int = 1,
        n_scatter: int = 4,
        scatter_window: int = 8,
        scatter_size: int = 3,
        scatter_seed: int = 0,
        n_noise: int = 4,
        init_sigma: float = 1.0,
        key_layer: int | None = None,
        stop_detach: bool = True,
        lookup: str = "matmul",
        head: str = "snap",
        dist_loss_weight: float = 0.0,
        stop_loss_weight: float = 1.0,
        stop_tol: float = 1e-3,
        stop_weight: float | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
    ):
        super().__init__(optimizer=optimizer, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
        self.save_hyperparameters(ignore=["optimizer"])
        cfg = NoiseLMConfig(
            vocab_size=vocab_size,
            block_size=block_size,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            dropout=dropout,
            bias=bias,
            code_dim=code_dim,
            centred_codes=centred_codes,
            trainable_codes=trainable_codes,
            code_seed=code_seed,
            n_levels=n_levels,
            level_stride=level_stride,
            n_scatter=n_scatter,
            scatter_window=scatter_window,
            scatter_size=scatter_size,
            scatter_seed=scatter_seed,
            n_noise=n_noise,
            init_sigma=init_sigma,
            key_layer=key_layer,
            stop_detach=stop_detach,
            lookup=lookup,
            head=head,
        )
        self.model = NoiseLM(cfg)
        self.dist_loss_weight = dist_loss_weight
        self.stop_loss_weight = stop_loss_weight
        self.stop_tol = stop_tol
        self.stop_weight = stop_weight

    # ---- losses ------------------------------------------------------------------------------
    def dist_loss(self, out: NoiseLMOutput, labels: torch.Tensor) -> torch.Tensor:
        """sum_k r_t(k) ||mu_(t,k) - c_(y_t)||^2 / d, r_t the detached posterior over states."""
        mask = labels != IGNORE_INDEX
        y = labels.clamp(min=0)
        log_e = out.log_emit.gather(-1, y[:, :, None, None].expand(-1, -1, out.log_emit.size(2), 1))
        resp = (out.log_pi + log_e.squeeze(-1)).softmax(-1).detach()  # (B, T, K)
        sq = ((out.mu - self.model.codes[y].unsqueeze(2)) ** 2).mean(-1)  # (B, T, K)
        return ((resp * sq).sum(-1) * mask).sum() / mask.sum().clamp(min=1)

    def stop_loss(self, out: NoiseLMOutput, labels: torch.Tensor) -> torch.Tensor:
        """Mismatch D between the stop head and the true (mean, variance) of the output ahead."""
        eos = self.tokenizer.eos_id if self.tokenizer is not None else None
        if eos is None:
            return out.stop_mean.new_zeros(())
        mean, var, mask = suffix_code_stats(labels, self.model.codes.detach(), eos)
        D = stop_mismatch(mean, var, out.stop_mean, out.stop_var)
        return (D * mask).sum() / mask.sum().clamp(min=1)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"loss": the optimised total, "nll", "dist", "stop"}."""
        out, labels = self.model.outputs(batch["input_ids"]), batch["labels"]
        nll = self.loss(out.log_probs, labels)
        zero = nll.new_zeros(())
        dist = self.dist_loss(out, labels) if self.dist_loss_weight else zero
        stop = self.stop_loss(out, labels) if self.stop_loss_weight else zero
        loss = nll + self.dist_loss_weight * dist + self.stop_loss_weight * stop
        return {"loss": loss, "nll": nll, "dist": dist, "stop": stop}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch)
        n = batch["input_ids"].size(0)
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=n)
        for name in ("nll", "dist", "stop"):
            self.log(f"train/{name}", parts[name], batch_size=n)
        return parts["loss"]

    def param_groups(self) -> list[dict[str, Any]]:
        """Matrices decay; vectors, codes, noise embeddings and the HMM's logits do not."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.dim() >= 2 and n.split(".")[-1] not in NO_DECAY]
        ids = {id(p) for p in decay}
        return [
            {"params": decay},
            {"params": [p for _, p in named if id(p) not in ids], "weight_decay": 0.0},
        ]

    # ---- decoding with a stop rule ------------------------------------------------------------
    def next_log_probs(self, rows: torch.Tensor) -> torch.Tensor:
        """(n, L) ids -> (n, V) log p of the next token (the last block_size tokens are read)."""
        return self.model(rows[:, -self.model.cfg.block_size :])[:, -1]

    def _tokenizer(self):
        if self.tokenizer is None:
            raise RuntimeError("this module has no tokenizer; fit it or load it from a checkpoint")
        return self.tokenizer

    @torch.no_grad()
    def answer_ids(
        self,
        prompts: list[str],
        rule: str = "eos",
        beams: int = 1,
        max_new_tokens: int | None = None,
    ) -> list[list[int]]:
        """Greedy answers as id lists (no specials), stopped by EOS (`rule="eos"`) or by the key
        rule (`rule="key"`: EOS banned, stub search with `beams` partial outputs)."""
        if rule not in ("eos", "key"):
            raise ValueError(f"rule must be 'eos' or 'key', got {rule!r}")
        was_training = self.model.training
        self.model.eval()
        try:
            encoded = [self.prompt_ids(p) for p in prompts]
            budget = [
                max_new_tokens or max(1, self.model.cfg.block_size - len(ids)) for ids in encoded
            ]
            if rule == "eos":
                return self._eos_answers(encoded, budget)
            return [self.key_search(ids, b, beams).tokens for ids, b in zip(encoded, budget)]
        finally:
            self.model.train(was_training)

    def _eos_answers(self, encoded: list[list[int]], budget: list[int]) -> list[list[int]]:
        """Greedy until EOS, prompts of one length batched (as `complete` does)."""
        eos = self._tokenizer().eos_id
        out: list[list[int]] = [[] for _ in encoded]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, ids in enumerate(encoded):
            groups.setdefault((len(ids), budget[i]), []).append(i)
        for (length, steps), rows in groups.items():
            batch = torch.tensor([encoded[i] for i in rows], device=self.device)
            seq = self.generate(batch, steps, greedy=True, eos_id=eos)
            for row, i in zip(seq[:, length:].tolist(), rows):
                out[i] = self.strip_special(row)
        return out

    def key_search(self, prompt: list[int], max_new_tokens: int, beams: int = 1) -> SearchResult:
        """The write-up's stop rule on one prompt: EOS and the other specials are banned."""
        tok = self._tokenizer()
        ids = torch.tensor([prompt], device=self.device)
        mean_hat, var_hat = (
            t[0] for t in self.model.stop_target(ids[:, -self.model.cfg.block_size :])
        )
        weight = (
            self.stop_weight if self.stop_weight is not None else 1.0 / max(self.stop_tol, 1e-12)
        )
        return stub_search(
            self.next_log_probs,
            prompt,
            self.model.codes.detach(),
            mean_hat,
            var_hat,
            beams=beams,
            max_new_tokens=max_new_tokens,
            tol=self.stop_tol,
            weight=weight,
            banned=tok.special_ids,
        )

    @torch.no_grad()
    def stop_profile(self, pairs: list[tuple[str, str]]) -> tuple[list[float], list[float]]:
        """Teacher-forced mismatch of each (prompt, answer): D at the answer's true length, and the
        smallest D at any shorter length (inf for one-token answers)."""
        tok = self._tokenizer()
        codes = self.model.codes.detach()
        was_training = self.model.training
        self.model.eval()
        end, before = [], []
        for prompt, answer in pairs:
            ids = torch.tensor([self.prompt_ids(prompt)], device=self.device)
            mean_hat, var_hat = self.model.stop_target(ids[:, -self.model.cfg.block_size :])
            c = codes[torch.tensor(tok.encode(answer), device=self.device)]  # (m, d)
            n = torch.arange(1, c.size(0) + 1, device=c.device, dtype=c.dtype).unsqueeze(1)
            mean = c.cumsum(0) / n
            var = ((c * c).cumsum(0) / n - mean * mean).clamp(min=0)
            D = stop_mismatch(mean, var, mean_hat, var_hat).tolist()
            end.append(D[-1])
            before.append(min(D[:-1], default=float("inf")))
        self.model.train(was_training)
        return end, before

    def calibrate_stop(self, pairs: list[tuple[str, str]]) -> float:
        """Set `stop_tol` to the tolerance that stops most `pairs` exactly (teacher-forced)."""
        from succu.models.noise_lm import calibrate_tolerance

        self.stop_tol = calibrate_tolerance(*self.stop_profile(pairs))
        self.hparams["stop_tol"] = self.stop_tol
        return self.stop_tol
