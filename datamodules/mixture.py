"""K named corpora in one datamodule: one shared tokenizer, rows labelled with their `source`."""

from __future__ import annotations

from datamodules.text import TextDataModule


class MixtureDataModule(TextDataModule):
    """Several corpora mixed row by row; `source` (B,) names each row's corpus by its index.

    Training rows draw their corpus from `weights` (uniform by default); validation batches are
    fixed windows of one corpus each, labelled, so a module can log per-corpus losses. For the alpha
    callback, `batch_from(name_or_index)` hands over a training batch of a single named corpus.

    Args:
        corpora: corpus names; a row's `source` is its index in this list.
        block_size: tokens per row (windows are block_size + 1 long).
        batch_size: rows per training batch.
        tokenizer_kind: "char" (every character of every corpus, plus `<EOS>` when a corpus has
            documents) or "bpe" (byte-level BPE trained on all training splits).
        bpe_vocab_size: BPE vocabulary size.
        data_paths: local file per corpus name, e.g. {shakespeare: /data/tinyshakespeare.txt}.
        data_dir: folder with the corpus files (default: $SUCCU_DATA_DIR, else ./data and
            ../shared/data beside the repository).
        source: "auto" (local files if found, else the hub), "local" or "hub".
        hub_ids: hub dataset id (or raw-text URL) per corpus name, overriding the defaults.
        hub_splits: hub split per corpus name (e.g. {tinystories: "train[:50000]"}).
        val_fraction: share held out of each corpus.
        split_seed: salt of the document split hash.
        abc_style: corpora put in abcGPT's surface form (lowercase, spaced punctuation); by
            default Shakespeare, as abcGPT does.
        fold_ascii: fold curly quotes, dashes and ellipses to ASCII in every corpus.
        val_windows: fixed evenly spaced validation windows per corpus.
        val_batch_size: rows per validation batch (default: batch_size).
        batches_per_epoch: training batches per epoch (windows are drawn forever).
        weights: sampling weight per corpus for training rows (default: uniform).
        seed: window seed (default: the global seed); combined with the DDP rank.
        num_workers: DataLoader workers.
        cache_dir: tokenizer and token cache (default: $SUCCU_CACHE_DIR or ~/.cache/succu).
    """

    def __init__(
        self,
        corpora: list[str] | None = None,
        block_size: int = 64,
        batch_size: int = 12,
        tokenizer_kind: str = "char",
        bpe_vocab_size: int = 1024,
        data_paths: dict[str, str] | None = None,
        data_dir: str | None = None,
        source: str = "auto",
        hub_ids: dict[str, str] | None = None,
        hub_splits: dict[str, str] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        abc_style: list[str] | None = None,
        fold_ascii: bool = True,
        val_windows: int = 256,
        val_batch_size: int | None = None,
        batches_per_epoch: int = 250,
        weights: list[float] | None = None,
        seed: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ):
        corpora = list(corpora) if corpora is not None else ["tinystories", "shakespeare"]
        if abc_style is None:
            abc_style = [c for c in corpora if c == "shakespeare"]
        super().__init__(
            corpora=corpora,
            block_size=block_size,
            batch_size=batch_size,
            tokenizer_kind=tokenizer_kind,
            bpe_vocab_size=bpe_vocab_size,
            data_paths=data_paths,
            data_dir=data_dir,
            source=source,
            hub_ids=hub_ids,
            hub_splits=hub_splits,
            val_fraction=val_fraction,
            split_seed=split_seed,
            abc_style=abc_style,
            fold_ascii=fold_ascii,
            val_windows=val_windows,
            val_batch_size=val_batch_size,
            batches_per_epoch=batches_per_epoch,
            weights=weights,
            seed=seed,
            num_workers=num_workers,
            cache_dir=cache_dir,
            label_source=True,
        )
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone.
        self.save_hyperparameters()
