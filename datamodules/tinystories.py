"""TinyStories (roneneldan/TinyStories): short stories, split by story, each ended by `<EOS>`."""

from __future__ import annotations

from datamodules.text import CorpusSpec, TextDataModule, register_corpus

TINYSTORIES = register_corpus(
    CorpusSpec(
        name="tinystories",
        filenames=("tinystories.txt", "TinyStories-train.txt"),
        hub_id="roneneldan/TinyStories",
        hub_split="train",
        separator="<|endoftext|>",
    )
)


class TinyStoriesDataModule(TextDataModule):
    """TinyStories: stories are whole on one side of the split (a hash of each story decides).

    Args:
        block_size: tokens per row (windows are block_size + 1 long).
        batch_size: rows per training batch.
        tokenizer_kind: "char" (every character, plus `<EOS>`) or "bpe" (byte-level BPE trained on
            the training split).
        bpe_vocab_size: BPE vocabulary size.
        data_path: local file of stories separated by `<|endoftext|>` lines (TinyStories-train.txt
            or a prefix of it); overrides the folder search and the hub.
        data_dir: folder holding tinystories.txt (default: $SUCCU_DATA_DIR, else ./data and
            ../shared/data beside the repository).
        source: "auto" (a local file if found, else the hub), "local" or "hub".
        hub_id: hub dataset id (default roneneldan/TinyStories).
        hub_split: split loaded from the hub; slicing such as "train[:50000]" works.
        val_fraction: share of stories held out.
        split_seed: salt of the story hash that makes the split.
        abc_style: abcGPT's surface form (lowercase, spaces around . , ! ? ; :).
        fold_ascii: fold curly quotes, dashes and ellipses to ASCII.
        val_windows: fixed evenly spaced validation windows.
        val_batch_size: rows per validation batch (default: batch_size).
        batches_per_epoch: training batches per epoch (windows are drawn forever).
        seed: window seed (default: the global seed); combined with the DDP rank.
        num_workers: DataLoader workers.
        cache_dir: tokenizer and token cache (default: $SUCCU_CACHE_DIR or ~/.cache/succu).
    """

    def __init__(
        self,
        block_size: int = 64,
        batch_size: int = 12,
        tokenizer_kind: str = "char",
        bpe_vocab_size: int = 1024,
        data_path: str | None = None,
        data_dir: str | None = None,
        source: str = "auto",
        hub_id: str | None = None,
        hub_split: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        abc_style: bool = False,
        fold_ascii: bool = True,
        val_windows: int = 256,
        val_batch_size: int | None = None,
        batches_per_epoch: int = 250,
        seed: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ):
        name = TINYSTORIES.name
        super().__init__(
            corpora=[name],
            block_size=block_size,
            batch_size=batch_size,
            tokenizer_kind=tokenizer_kind,
            bpe_vocab_size=bpe_vocab_size,
            data_paths={name: data_path} if data_path else None,
            data_dir=data_dir,
            source=source,
            hub_ids={name: hub_id} if hub_id else None,
            hub_splits={name: hub_split} if hub_split else None,
            val_fraction=val_fraction,
            split_seed=split_seed,
            abc_style=[name] if abc_style else [],
            fold_ascii=fold_ascii,
            val_windows=val_windows,
            val_batch_size=val_batch_size,
            batches_per_epoch=batches_per_epoch,
            seed=seed,
            num_workers=num_workers,
            cache_dir=cache_dir,
        )
        # Recorded in checkpoints, so analysis tools can rebuild this data from a checkpoint alone.
        self.save_hyperparameters()

    def setting(self, name: str) -> str:
        return "data_path"
