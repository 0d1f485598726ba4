"""tinyshakespeare (karpathy/char-rnn): 1 MB of running text, split by a contiguous tail."""

from __future__ import annotations

from datamodules.text import CorpusSpec, TextDataModule, register_corpus

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)

SHAKESPEARE = register_corpus(
    CorpusSpec(
        name="shakespeare",
        filenames=("tinyshakespeare.txt", "shakespeare.txt", "input.txt"),
        hub_id=SHAKESPEARE_URL,
    )
)


class ShakespeareDataModule(TextDataModule):
    """tinyshakespeare as nanoGPT's shakespeare_char: train on the first 90%, validate on the tail.

    Args:
        block_size: tokens per row (windows are block_size + 1 long).
        batch_size: rows per training batch.
        tokenizer_kind: "char" (65 characters, as nanoGPT) or "bpe" (byte-level BPE trained on the
            training split).
        bpe_vocab_size: BPE vocabulary size.
        data_path: local copy of the tinyshakespeare text; overrides the folder search and the hub.
        data_dir: folder holding tinyshakespeare.txt (default: $SUCCU_DATA_DIR, else ./data and
            ../shared/data beside the repository).
        source: "auto" (a local file if found, else the char-rnn text through `datasets`),
            "local" or "hub".
        hub_id: where the hub path loads from (default: the char-rnn input.txt URL).
        val_fraction: the held-out tail.
        abc_style: abcGPT's surface form (lowercase, spaces around . , ! ? ; :), off by default so
            the numbers compare with nanoGPT's.
        fold_ascii: fold curly quotes, dashes and ellipses to ASCII (a no-op on this corpus).
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
        val_fraction: float = 0.1,
        abc_style: bool = False,
        fold_ascii: bool = True,
        val_windows: int = 256,
        val_batch_size: int | None = None,
        batches_per_epoch: int = 250,
        seed: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ):
        name = SHAKESPEARE.name
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
            val_fraction=val_fraction,
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
