"""LanguageModule: what every succu architecture shares in Lightning.

A subclass names its model's Config dataclass (`config_class`) and builds `self.model` from it:
a plain torch module with the contract `forward(input_ids, *, kv_cache=None) -> logits`, plus
`alpha=` and `source=` for models that declare a dial (`succu.contracts.DialModel`). The module
takes that config whole as its `model` argument (YAML: `model.init_args.model.n_layer`), so every
hyperparameter of the network is declared once, in the dataclass, with its docstring. Everything
else lives here once: the next-token loss and perplexity, AdamW with decay/no-decay groups and
warmup-then-cosine, per-corpus validation losses, and the tokenizer (and each corpus's text
fingerprint) carried inside every checkpoint. Generation and held-out scoring are plain torch
(`succu.decoding.Decoding`), shared with the checkpoints the commands load without Lightning.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torchmetrics.text import Perplexity

from succu.checkpoint_files import CHECKPOINT_KEY, restore_layers, saved_tokenizer, succu_record
from succu.contracts import IGNORE_INDEX, NamedCorpora, TextFingerprints
from succu.decoding import Decoding
from succu.loggers import logged_step
from succu.optim import AdamW, apply_settings, optimizer_settings, warmup_cosine
from succu.tokenizers import Tokenizer

TEST = "test"  # the key of the whole test split in `accumulate_loss`


def token_count(labels: torch.Tensor) -> float:
    """Tokens that carry loss, as a float: the weight of a batch in token-averaged metrics.

    A float because Lightning averages integer batch sizes across DDP ranks in integer arithmetic.
    """
    return float((labels != IGNORE_INDEX).sum())


def perplexity(loss: float) -> float:
    """exp(loss): the perplexity of a mean per-token loss in nats (inf past float range)."""
    return math.exp(loss) if loss < 709.0 else math.inf


class LanguageModule(Decoding, L.LightningModule):
    """Base of every succu LightningModule.

    Args:
        model: the network's Config dataclass (or the dict of its fields a checkpoint stores);
            data-derived sizes (vocab_size, block_size) are linked into it from the datamodule by
            `python -m succu.fit`.
        optimizer: optimizer factory; parameters arrive as two groups, matrices (decayed with the
            optimizer's own weight_decay) and vectors/gains (weight_decay 0). Default:
            `succu.optim.AdamW` (nanoGPT's settings, fused), so a config names only the values
            that differ (`optimizer: {init_args: {lr: 0.003}}`).
        warmup_steps: linear learning-rate warmup steps before the cosine decay.
        min_lr_ratio: the cosine ends at this fraction of the peak learning rate.
        compile: run the training, validation and test steps through `torch.compile` of the
            network (inductor; on CPU it needs a C++ compiler). The first steps pay the
            compilation (inductor caches it for later runs). Generation (`generate`, `complete`, `stream`) always runs the eager
            network: with the KV cache every token has new shapes, which would recompile. The
            weights, checkpoints and their keys are the same either way (not saved as a
            hyperparameter: how a run executes, not what it trains).
    """

    config_class: ClassVar[type]  # the model's Config dataclass

    def __init__(
        self,
        model: Any,
        optimizer: OptimizerCallable = AdamW,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        compile: bool = False,
    ):
        super().__init__()
        if isinstance(model, Mapping):  # the plain-data form a checkpoint stores
            model = self.config_class(**model)
        if not isinstance(model, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes model: {self.config_class.__name__}, "
                f"got {type(model).__name__}"
            )
        # Hyperparameters as plain data: the config as a dict (checkpoints load without pickles,
        # and loggers show its fields). The second call adds it to what loggers receive too.
        self.save_hyperparameters(ignore=["optimizer", "model", "compile"])
        self.save_hyperparameters({"model": dataclasses.asdict(model)})
        self.model_config = model  # what the subclass builds its network from
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.compile_network = compile  # `self.compile` is nn.Module's in-place compile method
        self._compiled: tuple[int, Callable[..., torch.Tensor]] | None = None
        # The training loss of a step that the loggers skip (`succu.loggers.logged_step`), None
        # after a logged step; PreemptionCheckpoint sends it when the fit stops after that step.
        self.unlogged_loss: torch.Tensor | None = None
        # The optimizer settings the config gives (`configure_optimizers`), applied over a resumed
        # checkpoint's at the start of training (`on_train_start`).
        self.configured_optimizer: list[dict[str, Any]] | None = None
        self.tokenizer: Tokenizer | None = None
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.corpus_names: list[str] = []
        self.model: torch.nn.Module

    def corpus_name(self, index: int) -> str:
        return self.corpus_names[index] if index < len(self.corpus_names) else f"corpus{index}"

    # ---- data and loss -------------------------------------------------------------------
    def model_kwargs(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Extra keyword arguments for the model's forward (a dial model's alpha and source)."""
        return {}

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.network(input_ids, **kwargs)

    @property
    def network(self) -> Callable[..., torch.Tensor]:
        """What the steps run: `self.model`, or with `compile` its compiled call, made on first use.
        The call is compiled, not the module, so no `_orig_mod.` enters the state dict and
        `self.model` stays eager for generation."""
        if not self.compile_network:
            return self.model
        # Keyed by the network's id: a deep copy of this module (benchmarks copy one) or a swapped
        # network must not run the compiled call of the original.
        if self._compiled is None or self._compiled[0] != id(self.model):
            self._compiled = (id(self.model), torch.compile(self.model.__call__))
        return self._compiled[1]

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # In float32 under bf16 autocast too (a no-op on float32 logits): a bf16 log-softmax over
        # the vocabulary would round the loss itself.
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches are flat dicts of tensors (the data contract); moving them directly skips
        # Lightning's generic collection walk, a measurable cost at SuccuLM's short steps.
        if isinstance(batch, dict) and all(isinstance(v, torch.Tensor) for v in batch.values()):
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], **self.model_kwargs(batch))
        loss = self.loss(logits, batch["labels"])
        if self._trainer is not None and not logged_step(self._trainer):
            self.unlogged_loss = loss.detach()  # a reference: nothing is read back
            return loss
        self.unlogged_loss = None
        # On the CPU, so that the progress bar, which Lightning reads at every later step, holds
        # no GPU tensor to read back (a host sync) until the next logged step. An explicit
        # batch_size spares Lightning a search through the batch.
        self.log("train/loss", loss.detach().cpu(), prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], **self.model_kwargs(batch))
        loss = self.loss(logits, batch["labels"])
        n_tokens = token_count(batch["labels"])
        # Token-weighted across batches, so val/loss is the mean per-token loss of the split.
        self.log("val/loss", loss, prog_bar=True, batch_size=n_tokens, sync_dist=True)
        self.val_ppl(logits.float(), batch["labels"])
        self.log("val/ppl", self.val_ppl, batch_size=batch["input_ids"].size(0))
        return loss

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the batch's token losses; `on_test_epoch_end` logs test/loss and test/ppl."""
        logits = self(batch["input_ids"], **self.eval_kwargs(batch))
        self.accumulate_loss(TEST, logits, batch["labels"])

    def on_test_epoch_start(self) -> None:
        self._loss_sums = {}

    def on_test_epoch_end(self) -> None:
        losses = self.reduced_losses([TEST])
        if TEST in losses:
            self.log_loss("test", losses[TEST][0])

    def log_loss(self, split: str, loss: float, **kwargs: Any) -> None:
        """`<split>/loss` (a mean per-token loss over the split) and `<split>/ppl`, its exp, both
        from the same number."""
        self.log(f"{split}/loss", loss, **kwargs)
        self.log(f"{split}/ppl", perplexity(loss))

    # ---- per-corpus validation losses ---------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._loss_sums: dict[Any, list[float]] = {}

    def accumulate_loss(self, key: Any, logits: torch.Tensor, labels: torch.Tensor,
                        groups: dict[Any, torch.Tensor] | None = None) -> None:
        """Add a batch's summed token loss and token count under `key` (e.g. a corpus), and under
        each key of `groups` the sum over its tokens (a boolean mask shaped like labels): the
        token losses are computed once for all of them."""
        losses = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                 ignore_index=IGNORE_INDEX, reduction="none").view_as(labels)
        known = labels != IGNORE_INDEX
        for k, mask in {key: known, **(groups or {})}.items():
            mask = mask & known
            acc = self._loss_sums.setdefault(k, [0.0, 0.0])
            acc[0] += float(losses[mask].sum())
            acc[1] += float(mask.sum())

    def local_losses(self) -> dict[Any, tuple[float, float]]:
        """(mean loss, tokens) of each key seen so far this epoch, on this rank only."""
        return {k: (s / n, n) for k, (s, n) in self._loss_sums.items() if n > 0}

    def reduced_losses(self, keys: list[Any]) -> dict[Any, tuple[float, float]]:
        """(token-weighted mean loss, tokens) of each key over the epoch and every DDP rank (keys
        with no tokens anywhere are left out). Every rank must pass the same keys in order."""
        sums = torch.tensor([self._loss_sums.get(k, (0.0, 0.0)) for k in keys],
                            dtype=torch.float64, device=self.device).reshape(-1, 2)
        if self._trainer is not None:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        return {k: (s / n, n) for k, (s, n) in zip(keys, sums.tolist()) if n > 0}

    def corpus_indices(self) -> list[int]:
        """Every corpus of the datamodule (one unnamed corpus without NamedCorpora)."""
        return list(range(max(1, len(self.corpus_names))))

    # ---- optimisation ----------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Matrices decay, vectors (biases, LayerNorm gains) do not, as in nanoGPT."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer,
                                    gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Lightning's clipping, also for fused AdamW (the configs' choice) under bf16-mixed.
        Lightning refuses to clip under any mixed precision when the optimizer unscales its own
        gradients, which matters only with 16-mixed's GradScaler: bf16 scales nothing, so its
        gradients are clipped exactly as in 32-bit."""
        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.param_groups())
        self.configured_optimizer = optimizer_settings(optimizer)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer else 1
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, self.warmup_steps, total, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_start(self) -> None:
        """A fit resumed from a checkpoint trains with the optimizer settings its config gives:
        Lightning restores the checkpoint's optimizer whole, settings included, so a learning rate
        (or weight decay, betas, ...) changed for the resumed fit would be recorded in its
        config.yaml and silently ignored. Each changed setting is put back, the learning rate as
        the schedule's new peak (the step's rate follows the schedule from it, as in a fit started
        with it), and one note line says what changed. A fresh fit has nothing to change."""
        if self.configured_optimizer is None or not self.trainer.optimizers:
            return
        optimizer = self.trainer.optimizers[0]
        schedulers = [c.scheduler for c in self.trainer.lr_scheduler_configs if c.scheduler.optimizer is optimizer]
        changed = apply_settings(optimizer, self.configured_optimizer, schedulers[0] if schedulers else None)
        if changed and self.trainer.is_global_zero:
            said = "; ".join(f"{key} from {old} to {new}" for key, (old, new) in changed.items())
            print(f"note: resumed with the config's optimizer settings, not the checkpoint's: "
                  f"{said}", file=sys.stderr, flush=True)

    # ---- tokenizer in the checkpoint ---------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Every datamodule exposes `tokenizer` (the data contract); a Trainer may have none.
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is not None and datamodule.tokenizer is not None:
            self.tokenizer = datamodule.tokenizer
        if isinstance(datamodule, NamedCorpora):
            self.corpus_names = list(datamodule.corpora)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint[CHECKPOINT_KEY] = succu_record(f"{cls.__module__}.{cls.__qualname__}", self,
                                                  self.tokenizer, checkpoint["state_dict"])
        # Each corpus's name and text fingerprint (no path): tools refuse to score another text.
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if isinstance(datamodule, TextFingerprints):
            checkpoint[CHECKPOINT_KEY]["corpora"] = [text.record() for text in datamodule.corpus_texts()]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = saved_tokenizer(checkpoint)
        if saved is not None:
            # Under a Trainer the data's tokenizer is already set (setup runs first): weights read
            # through another vocabulary give plausible but meaningless numbers, so refuse.
            if self.tokenizer is not None and self.tokenizer != saved:
                raise ValueError(
                    f"the checkpoint's tokenizer ({saved.kind}, {saved.vocab_size} tokens) is not "
                    f"the data's ({self.tokenizer.kind}, {self.tokenizer.vocab_size} tokens); to "
                    "score other text use `python -m succu.evaluate --ckpt CKPT --text FILE`"
                )
            self.tokenizer = saved
        # Both load_module and Lightning's resume call this hook before load_state_dict.
        restore_layers(self, checkpoint)
