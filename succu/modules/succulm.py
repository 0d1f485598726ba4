"""SuccuLMModule: SuccuLM in Lightning, with optional initial embeddings (read and written)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from succu.contracts import InitialEmbeddings
from succu.embeddings import read_embeddings_json, write_embeddings_json
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
        frozen_words: vocabulary words whose embedding rows keep the values they start the fit
            with (loaded or random): each is written back after every optimizer step, so neither
            its gradient nor weight decay moves it, and the tied output reads the same row (the
            sophia trap's dose-response freezes sophia's prepared row this way).

    QA exact match at every validation and the per-block diagnostics are callbacks a config names
    (`callbacks.qa.QAExactMatch`, `callbacks.diagnostics.Diagnostics`).
    """

    config_class = SuccuLMConfig

    def __init__(
        self,
        model: SuccuLMConfig = SuccuLMConfig(),  # noqa: B008
        init_embeddings: str | None = None,
        strict_embeddings: bool = False,
        save_embeddings: str | None = None,
        frozen_words: list[str] = [],  # noqa: B006  (a YAML list; never mutated)
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
        self.model = SuccuLM(self.model_config)
        self.init_embeddings = init_embeddings
        self.strict_embeddings, self.save_embeddings = strict_embeddings, save_embeddings
        self.frozen_words = list(frozen_words)
        self._frozen: tuple[torch.Tensor, torch.Tensor] | None = None  # (row ids, their values)

    def on_fit_start(self) -> None:
        """Copy initial vectors into E (from `init_embeddings`, else from the data's own file) and
        note the rows `frozen_words` keep. Only a fresh run initialises; a resumed run's checkpoint
        already holds the trained rows."""
        if self.trainer.ckpt_path is None:
            self._initial_embeddings()
        self._frozen = self._frozen_rows()

    def _frozen_rows(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The ids of `frozen_words` and their rows as the fit starts (a resumed fit's checkpoint
        holds them unchanged)."""
        if not self.frozen_words:
            return None
        vocab = self.tokenizer.vocab if self.tokenizer is not None else []
        unknown = [w for w in self.frozen_words if w not in vocab]
        if unknown:
            raise ValueError(f"frozen_words {unknown} are not in the vocabulary ({len(vocab)} words)")
        ids = torch.tensor([vocab.index(w) for w in self.frozen_words], device=self.device)
        return ids, self.model.embed.weight.detach()[ids].clone()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Write the frozen rows back: the optimizer step just moved them."""
        if self._frozen is not None:
            ids, rows = self._frozen
            with torch.no_grad():
                self.model.embed.weight[ids] = rows

    def _initial_embeddings(self) -> None:
        """Copy initial vectors into E: from `init_embeddings`, else from the data's own file."""
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
