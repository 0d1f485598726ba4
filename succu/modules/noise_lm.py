"""The noise-embedding LMs in Lightning: NLL plus two auxiliary losses, and gradient clipping that
leaves the detached stop head out of the LM's norm; decoding stopped by the statistics rule (beam,
minimax or alpha-beta stub search) is plain torch (`succu.decoding.KeyRuleDecoding`). NoiseLMModule is the write-up's model
(succu/models/noise_lm.py: no neural encoder); NoiseTransformerModule
(succu/modules/noise_transformer.py) its transformer-encoder variant."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from succu.decoding import STOP_TOL, KeyRuleDecoding, SnapGreedy
from succu.models.noise_lm import NoiseLM, NoiseLMConfig
from succu.modules.base import IGNORE_INDEX, LanguageModule
from succu.nn.noise import NoiseLMOutput, stop_mismatch, suffix_code_stats

# Parameters that are not weights of a map: decaying them would pull codes, noise offsets, the
# transition logits (towards uniform) and sigma towards zero, which is not regularisation.
NO_DECAY = (
    "codes", "noise", "token_noise", "trans_logits", "init_logits", "path_logit", "level_logits",
    "log_sigma",
)


class NoiseModule(KeyRuleDecoding, LanguageModule):
    """What both noise-embedding LMs share (a subclass names `config_class` and `network_class`).

    Args:
        model: the network's config.
        dist_loss_weight: lambda of the posterior-weighted ||mu - c_y||^2 / d term (0: exact NLL).
        stop_loss_weight: weight of the stop head's mismatch loss.
        stop_tol: stop-rule tolerance on the mismatch D (`calibrate_stop` sets it from data).
        stop_weight: weight of D in the stub search's score (None: 1 / stop_tol).
    """

    network_class: ClassVar[type[nn.Module]]

    def __init__(
        self,
        model: Any,
        dist_loss_weight: float = 0.0,
        stop_loss_weight: float = 1.0,
        stop_tol: float = STOP_TOL,
        stop_weight: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.model = self.network_class(self.model_config)
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

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the LM and the stop head each on its own: the head is trained on detached inputs,
        and one joint norm would let its gradients shrink the LM's step (and the reverse)."""
        if not gradient_clip_val:
            return
        head = {id(p) for p in self.model.stop_head.parameters()}
        lm = [p for p in self.parameters() if p.grad is not None and id(p) not in head]
        stop = [p for p in self.model.stop_head.parameters() if p.grad is not None]
        for params in (lm, stop):
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def param_groups(self) -> list[dict[str, Any]]:
        """Matrices decay; vectors, codes, noise embeddings and the HMM's logits do not."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.dim() >= 2 and n.split(".")[-1] not in NO_DECAY]
        ids = {id(p) for p in decay}
        return [
            {"params": decay},
            {"params": [p for _, p in named if id(p) not in ids], "weight_decay": 0.0},
        ]


class NoiseLMModule(SnapGreedy, NoiseModule):
    """The write-up's NoiseLM (no neural encoder): fixed codes, per-token and state noise
    embeddings, mean hierarchies, the node with B and C, the snap. Greedy decoding is the post's
    rule: the most probable candidate snapped to the nearest code (`NoiseLM.snap_decode`); sampling
    draws from the relaxed (distance-softmax) distribution at the given temperature.

    Args:
        model: the network (NoiseLMConfig).
    """

    config_class = NoiseLMConfig
    network_class = NoiseLM

    def __init__(self, model: NoiseLMConfig = NoiseLMConfig(), **kwargs: Any):  # noqa: B008
        super().__init__(model, **kwargs)
