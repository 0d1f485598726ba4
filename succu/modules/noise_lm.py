"""NoiseLMModule: the noise-embedding LM in Lightning: NLL plus its two auxiliary losses, and
decoding stopped by the key-layer rule (see succu/models/noise_lm.py for the maths)."""

from __future__ import annotations

from typing import Any

import torch

from succu.models.noise_lm import (
    NoiseLM,
    NoiseLMConfig,
    NoiseLMOutput,
    SearchResult,
    running_mean_var,
    stop_mismatch,
    stub_search,
    suffix_code_stats,
)
from succu.modules.base import IGNORE_INDEX, LanguageModule
from succu.nn.utils import eval_mode

# Parameters that are not weights of a map: decaying them would pull codes, noise offsets, the
# transition logits (towards uniform) and sigma towards zero, which is not regularisation.
NO_DECAY = ("codes", "noise", "trans_logits", "init_logits", "log_sigma")


class NoiseLMModule(LanguageModule):
    """NoiseLM: fixed random codes, scattershot context, K noise embeddings under an HMM, snap.

    Args:
        model: the network (NoiseLMConfig: encoder, codes, hierarchy, noise states, snap).
        dist_loss_weight: lambda of the posterior-weighted ||mu - c_y||^2 / d term (0: exact NLL).
        stop_loss_weight: weight of the stop head's mismatch loss.
        stop_tol: stop-rule tolerance on the mismatch D (`calibrate_stop` sets it from data).
        stop_weight: weight of D in the stub search's score (None: 1 / stop_tol).
    """

    config_class = NoiseLMConfig

    def __init__(
        self,
        model: NoiseLMConfig = NoiseLMConfig(),  # noqa: B008
        dist_loss_weight: float = 0.0,
        stop_loss_weight: float = 1.0,
        stop_tol: float = 1e-3,
        stop_weight: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.model = NoiseLM(self.model_config)
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
        with eval_mode(self.model):
            encoded = [self.prompt_ids(p) for p in prompts]
            budget = [
                max_new_tokens or max(1, self.model.cfg.block_size - len(ids)) for ids in encoded
            ]
            if rule == "eos":
                return self._eos_answers(encoded, budget)
            return [self.key_search(ids, b, beams).tokens for ids, b in zip(encoded, budget)]

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
        """The key-layer stop rule on one prompt: EOS and the other specials are banned."""
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
        end, before = [], []
        with eval_mode(self.model):
            for prompt, answer in pairs:
                ids = torch.tensor([self.prompt_ids(prompt)], device=self.device)
                mean_hat, var_hat = self.model.stop_target(ids[:, -self.model.cfg.block_size :])
                c = codes[torch.tensor(tok.encode(answer), device=self.device)]  # (m, d)
                # Moments of the answer's first 1..m codes: one sequence of running statistics.
                mean, var = (t[0] for t in running_mean_var(c[None]))
                D = stop_mismatch(mean, var, mean_hat, var_hat).tolist()
                end.append(D[-1])
                before.append(min(D[:-1], default=float("inf")))
        return end, before

    def calibrate_stop(self, pairs: list[tuple[str, str]]) -> float:
        """Set `stop_tol` to the tolerance that stops most `pairs` exactly (teacher-forced)."""
        from succu.models.noise_lm import calibrate_tolerance

        self.stop_tol = calibrate_tolerance(*self.stop_profile(pairs))
        self.hparams["stop_tol"] = self.stop_tol
        return self.stop_tol
