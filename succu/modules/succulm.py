"""SuccuLMModule: SuccuLM in Lightning, with optional initial embeddings, `qa/` and `diag/` logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from succu.analysis.plots import attention_figure, save_figure
from succu.analysis.qa import qa_exact_match
from succu.contracts import InitialEmbeddings, QAProbes
from succu.embeddings import read_embeddings_json, write_embeddings_json
from succu.loggers import log_image
from succu.models.succulm import SuccuLM, SuccuLMConfig
from succu.modules.base import LanguageModule


class SuccuLMModule(LanguageModule):
    """SuccuLM: a tiny pre-LN transformer with tied output and sinusoidal positions.

    Args:
        model: the network's sizes (SuccuLMConfig: a profile and single-field overrides).
        init_embeddings: a JSON file {word: [floats]} (the reference's succulm_embeddings.json)
            whose vectors initialise the matching rows of the token embedding. Without it, a
            datamodule that brings initial embeddings (succulent data_dir) initialises them.
            The rows stay trainable (the article's `from_pretrained(..., freeze=False)`).
        strict_embeddings: `init_embeddings` must hold a vector for every vocabulary word, as the
            article's `from_pretrained` takes the whole matrix (the second stage of prepared
            embeddings); off, words the file lacks keep their random rows.
        save_embeddings: at the end of fit, write the token embedding as the article's
            `{word: [floats]}` file to this path (atomically, by rank zero; not under
            fast_dev_run): the first stage of prepared embeddings.
        diagnostics: at every validation, log per-block residual norms, FFN-output norms and
            cos(x, x + ffn(x)) under `diag/`, and write the attention maps (every block and head)
            of the first validation sequence to `<run>/diag/attention_<step>.png`.
        log_qa: at every validation, log greedy exact match on the data's training and held-out
            questions (`qa/train_exact_match`, `qa/heldout_exact_match`) when it has QA probes
            (succulent data): the end-of-fit talk's numbers as curves.
    """

    config_class = SuccuLMConfig

    def __init__(
        self,
        model: SuccuLMConfig = SuccuLMConfig(),  # noqa: B008
        init_embeddings: str | None = None,
        strict_embeddings: bool = False,
        save_embeddings: str | None = None,
        diagnostics: bool = False,
        log_qa: bool = True,
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.model = SuccuLM(self.model_config)
        self.init_embeddings = init_embeddings
        self.strict_embeddings, self.save_embeddings = strict_embeddings, save_embeddings
        self.diagnostics = diagnostics
        self.log_qa = log_qa

    def on_fit_start(self) -> None:
        """Copy initial vectors into E: from `init_embeddings`, else from the data's own file.

        Only a fresh run does this; a resumed run's checkpoint already holds the trained rows.
        """
        if self.trainer.ckpt_path is not None:
            return
        if self.init_embeddings:
            if self.tokenizer is None:
                raise ValueError("init_embeddings needs a datamodule with a tokenizer")
            vectors = read_embeddings_json(self.init_embeddings)
            missing = [w for w in self.tokenizer.vocab if w not in vectors]
            if self.strict_embeddings and missing:
                raise ValueError(
                    f"{self.init_embeddings}: no vector for {len(missing)} vocabulary words, e.g. "
                    f"{missing[:8]}; strict_embeddings wants one for every word (both stages "
                    "must have the same vocabulary)")
            if self.model.load_embeddings(vectors, self.tokenizer.vocab) == 0:
                raise ValueError(f"no word of the vocabulary is in {self.init_embeddings}")
            return
        datamodule = self.trainer.datamodule
        weight = datamodule.embedding_weight() if isinstance(datamodule, InitialEmbeddings) else None
        if weight is not None:
            if weight.shape != self.model.embed.weight.shape:
                raise ValueError(
                    f"the data's embeddings are {tuple(weight.shape)} but the model's embedding "
                    f"is {tuple(self.model.embed.weight.shape)} (set n_embd to match)"
                )
            with torch.no_grad():
                self.model.embed.weight.copy_(weight)

    def on_fit_end(self) -> None:
        """Write the trained embedding as `{word: vector}` when `save_embeddings` asks for it."""
        super().on_fit_end()
        trainer = self.trainer
        if not self.save_embeddings or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        if self.tokenizer is None:
            raise ValueError("save_embeddings needs a datamodule with a tokenizer (the words)")
        path = write_embeddings_json(self.save_embeddings, self.tokenizer, self.model.embed.weight)
        rank_zero_info(f"embeddings of {len(self.tokenizer)} words written to {path}")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = super().validation_step(batch, batch_idx)
        if self.diagnostics and batch_idx == 0:
            stats = self.model.diagnostics(batch["input_ids"], batch["labels"] != -100)
            for name, value in stats.items():
                if name != "attention":
                    self.log(f"diag/{name}", value, batch_size=1, sync_dist=True)
            self.save_attention(batch["input_ids"][0], [a[0] for a in stats["attention"]])
        return loss

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        datamodule = self.trainer.datamodule
        if not self.log_qa or self.trainer.sanity_checking or not isinstance(datamodule, QAProbes):
            return
        # Every rank scores the same weights on the same questions: the mean is that value.
        for name, pairs in (("train", datamodule.train_qa), ("heldout", datamodule.heldout_qa)):
            if pairs:
                score = qa_exact_match(self, list(pairs)).exact_match
                self.log(f"qa/{name}_exact_match", score, sync_dist=True)

    def save_attention(self, ids: torch.Tensor, maps: list[torch.Tensor]) -> None:
        """Attention maps of the first validation sequence, as a PNG in the run directory."""
        if self._trainer is None or self.trainer.sanity_checking:
            return
        # trainer.log_dir is a collective under DDP: every rank asks, only rank 0 writes.
        run_dir = Path(self.trainer.log_dir or ".")
        if not self.trainer.is_global_zero:
            return
        n = int((ids != self.tokenizer.pad_id).sum()) if self.tokenizer else ids.numel()
        tokens = [self.tokenizer.vocab[i] for i in ids[:n].tolist()] if self.tokenizer else []
        fig = attention_figure([m[:, :n, :n] for m in maps], tokens)
        step = self.trainer.global_step
        path = save_figure(fig, run_dir / "diag" / f"attention_{step:06d}.png")
        log_image(self.loggers, "diag/attention", path, step)
