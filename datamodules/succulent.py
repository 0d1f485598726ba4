"""The succulent world as language-model batches: SuccuPairsDataModule.

The world itself is plain Python: its tables (`succulent_tables`), the generator and the QA split
(`succulent_world`), its grammar and facts (`succulent_grammar`) and the reference's pair files
(`succulent_files`). This module tokenises the pairs with a word tokenizer and batches them.

The hidden words (default `sophia`) get a vocabulary id, hence an embedding row, but occur in no
training or validation text: the "sophia trap" probes whether a damaged model drifts into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.succulent_files import (
    EMBEDDINGS_FILE,
    HELDOUT_QA_FILE,
    NORMAL_FILE,
    QA_FILE,
    read_pairs_json,
    save_reference_files,
)
from datamodules.succulent_grammar import (
    word_classes,
    world_facts,
    world_sentences,
    world_statements,
)
from datamodules.succulent_tables import PROBE_PROMPTS, SOPHIA, Pair
from datamodules.succulent_world import (
    KEEP_IN_TRAIN,
    check_qa_phrasings,
    generate_world,
    left_out_normal_pairs,
    split_normal_pairs,
    world_names,
)
from succu.contracts import BatchSized, InitialEmbeddings, QAProbes, WorldGrammar, WorldKnowledge
from succu.data import ResumableTraining, pin_memory
from succu.embeddings import read_embeddings_json
from succu.tokenizers import SPECIALS, WordTokenizer, split_words


def world_grammar(world: str = "standard", qa_phrasings: str = "base") -> WorldGrammar:
    """The `WorldGrammar` of a generated succulent world ("standard" or "with_sophia") whose
    questions are asked in `qa_phrasings` ("base" or "extended"; statements and facts are the
    same in both)."""
    return WorldGrammar(word_classes(world_names(world)), world_sentences(world, qa_phrasings),
                        world_statements(world), world_facts(world))


def embedding_matrix(embeddings: dict[str, list[float]], tokenizer: WordTokenizer) -> torch.Tensor:
    """The (vocab_size, d) matrix of `embeddings` in the tokenizer's id order."""
    missing = [w for w in tokenizer.vocab if w not in embeddings]
    if missing:
        raise ValueError(f"embeddings lack {len(missing)} vocabulary words, e.g. {missing[:5]}")
    return torch.tensor([embeddings[w] for w in tokenizer.vocab], dtype=torch.float32)


def encode_pair(tokenizer: WordTokenizer, s1: str, s2: str) -> list[int]:
    """The reference's sequence: `<BOS> s1 s2 <EOS>`, s1 and s2 tokenised together."""
    return [tokenizer.bos_id, *tokenizer.encode(s1 + " " + s2), tokenizer.eos_id]


QA_LOSSES = ("sequence", "answer")


def pair_labels(tokenizer: WordTokenizer, s1: str, ids: list[int], answer_only: bool) -> list[int]:
    """The labels of `ids` (`encode_pair` of s1 and s2): the next token everywhere, or with
    `answer_only` only where it is s2's or `<EOS>` (-100, no loss, where it is s1's)."""
    labels = ids[1:]
    if answer_only:
        n1 = len(tokenizer.encode(s1))
        labels = [-100] * n1 + labels[n1:]
    return labels


class PairDataset(Dataset):
    """Pairs as (input, label) id lists shifted by one, as the reference's SentencePairDataset;
    the pairs whose s1 is in `answer_only` carry loss on s2 and `<EOS>` only (`pair_labels`)."""

    def __init__(self, pairs: Sequence[Pair], tokenizer: WordTokenizer,
                 answer_only: frozenset[str] = frozenset()):
        self.pairs = list(pairs)
        ids = [encode_pair(tokenizer, s1, s2) for s1, s2 in self.pairs]
        self.rows = [(i[:-1], pair_labels(tokenizer, s1, i, s1 in answer_only))
                     for i, (s1, _) in zip(ids, self.pairs)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> dict[str, list[int]]:
        inputs, labels = self.rows[idx]
        return {"input_ids": inputs, "labels": labels}


class ResumableShuffle(DistributedSampler):
    """Training order: a fresh permutation each epoch from (seed, epoch); DDP ranks take
    interleaved slices (as DistributedSampler does, so Lightning leaves it in place).

    The epoch and the position inside it come from `cursor["consumed"]`, the number of training
    batches the datamodule has handed to the model. After a resume mid-epoch the sampler starts at
    the first batch not yet trained on, so the resumed run sees exactly the rows an uninterrupted
    run would have seen.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, cursor: dict[str, int],
                 num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.cursor = batch_size, cursor

    def __iter__(self):
        per_epoch = -(-self.num_samples // self.batch_size)
        epoch, done = divmod(self.cursor["consumed"], per_epoch)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        order += order[: self.total_size - len(order)]  # pad so every rank gets as many rows
        mine = order[self.rank : self.total_size : self.num_replicas]
        return iter(mine[done * self.batch_size :])


class PadCollate:
    """Pad a batch to its longest row: inputs with `<PAD>`, labels with -100 (no loss there).

    A class rather than a closure so that worker processes can pickle it.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for k, row in enumerate(rows):
            n = len(row["input_ids"])
            inputs[k, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            labels[k, :n] = torch.tensor(row["labels"], dtype=torch.long)
        return {"input_ids": inputs, "labels": labels}


# ----------------------------------------------------------------------------- the DataModule


class SuccuPairsDataModule(ResumableTraining, QAProbes, InitialEmbeddings,
                           BatchSized, WorldKnowledge):
    """Sentence pairs of the succulent world (or of the reference's JSON files) as LM batches.

    Each pair becomes `<BOS> s1 s2 <EOS>`; a batch is `{"input_ids", "labels"}` padded to its
    longest row, labels -100 on padding. Training: the training QA and the training normal pairs.
    Validation: the held-out normal pairs, the development QA ("garden") and the held-out QA. Test (generated world only): the
    normal pairs the seed left out of the world, seen by neither, and the held-out QA instead of
    validation when `heldout_qa_split="test"` (a study that picks settings on validation then
    reports QA on text it never chose by); the reference's files hold no test split, so `test`
    on them is a one-line error.
    `dev_qa` (`QAProbes`) is world "garden"'s QA development split, empty in the others.

    Args:
        data_dir: Folder with the reference's succulm_normal_sentence_pairs.json and
            succulm_question_answer_pairs.json (JSON lists of [s1, s2]); an optional
            succulm_embeddings.json {word: [floats]} then defines the vocabulary, and an optional
            succulm_heldout_question_answer_pairs.json the held-out QA. None generates the
            succulent world.
        seed: Seed of the world generator, of the train/validation split and of the train shuffle.
        batch_size: Pairs per batch.
        val_fraction: Share of the normal pairs held out for validation, split from the seed.
        block_size: Context length; None means the longest pair's length minus one (the
            reference's max_len). A value below what the longest pair needs raises ValueError.
        hidden_words: Words that get a vocabulary id (an embedding row) but never occur in
            training or validation text, for the sophia trap. None: `sophia` in the standard
            world, none in "with_sophia" (where she is a character).
        world: Which generated world: "standard" (ruby and winy; `sophia` hidden),
            "with_sophia" (the same world plus sophia, a third plant with her own facts,
            sentences and questions: the first stage that prepares embeddings for the
            standard world; both have the same vocabulary) or "garden" (the standard world's
            stories, with ruby and winy asked about among six more plants whose facts overlap
            theirs: every held-out question answerable from what training teaches, yes and no
            equally common, and a development split, `dev_qa`, to choose checkpoints by;
            docs/data.md). Ignored with `data_dir`.
        qa_phrasings: Which question templates the generated world asks: "base" (the default:
            each relation's own wh- and yes/no templates, the world the studies use) or
            "extended" (also a "tell me ..." wh-question per relation and "do you think
            <statement>?" for every fact with values, and a yes/no question is held out only
            while the same value is trained in the other phrasing). With `data_dir` the pairs come from the files, and this only picks the meter's
            grammar, as `world` does.
        heldout_qa_split: Where the held-out QA is scored: "val" (with the held-out normal pairs)
            or "test" (with the left-out normal pairs; generated world only).
        qa_loss: What a question/answer pair is trained on: "sequence" (the article's: every
            token of `<BOS> question answer <EOS>`) or "answer" (only the answer's tokens and
            `<EOS>`: the model is taught to answer, not to ask). Normal pairs always train on
            their whole sequence; validation scores each pair as training does.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        seed: int = 42,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        block_size: int | None = None,
        hidden_words: Sequence[str] | None = None,
        heldout_qa_split: str = "val",
        num_workers: int = 0,
        world: str = "standard",
        qa_phrasings: str = "base",
        qa_loss: str = "sequence",
    ):
        super().__init__()
        # block_size is logged by the model, which receives the derived value through the CLI link;
        # logging the datamodule's None beside it would conflict.
        self.save_hyperparameters(ignore=["block_size"])
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if heldout_qa_split not in ("val", "test"):
            raise ValueError(f"heldout_qa_split must be 'val' or 'test', got {heldout_qa_split!r}")
        self.heldout_qa_split = heldout_qa_split
        self.names = world_names(world)  # checks `world`
        self.world = world
        self.qa_phrasings = check_qa_phrasings(qa_phrasings)
        if qa_loss not in QA_LOSSES:
            raise ValueError(f"qa_loss must be one of {list(QA_LOSSES)}, got {qa_loss!r}")
        self.qa_loss = qa_loss
        self.data_dir, self.seed, self.batch_size = data_dir, seed, batch_size
        self.num_workers = num_workers
        if hidden_words is None:
            hidden_words = () if SOPHIA in self.names else (SOPHIA,)
        self.hidden_words = list(hidden_words)
        self.probe_prompts = list(PROBE_PROMPTS)
        # Built here, not in setup(): the CLI links vocab_size/block_size into the model at
        # instantiation, and building is cheap and deterministic.
        self.embeddings: dict[str, list[float]] | None = None
        normal, self.train_qa, self.dev_qa, self.heldout_qa = self._load_pairs()
        self.normal_pairs = normal
        self.train_normal, self.val_normal = split_normal_pairs(
            normal, val_fraction, seed, keep_in_train=KEEP_IN_TRAIN
        )
        self.tokenizer = self._build_tokenizer()
        self.block_size = self._check_block_size(block_size)
        self.hidden_token_ids = self._hidden_token_ids()

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def train_pairs(self) -> list[Pair]:
        return self.train_qa + self.train_normal

    @property
    def val_pairs(self) -> list[Pair]:
        return self.val_normal + self.dev_qa + (self.heldout_qa if self.heldout_qa_split == "val" else [])

    def _load_pairs(self) -> tuple[list[Pair], list[Pair], list[Pair], list[Pair]]:
        """(normal pairs, training QA, development QA, held-out QA) from `data_dir` (no
        development QA), or from the generator."""
        if self.data_dir is None:
            world = generate_world(self.seed, self.world, self.qa_phrasings)
            return world.normal_pairs, world.train_qa, world.dev_qa, world.heldout_qa
        root = Path(self.data_dir)
        if not root.is_dir():
            raise FileNotFoundError(
                f"data_dir {root} is not a folder; expected one holding {NORMAL_FILE} and "
                f"{QA_FILE} (or data_dir: null to generate the succulent world)"
            )
        normal = read_pairs_json(root / NORMAL_FILE)
        qa = read_pairs_json(root / QA_FILE)
        heldout = (
            read_pairs_json(root / HELDOUT_QA_FILE, allow_empty=True)
            if (root / HELDOUT_QA_FILE).exists() else []
        )
        if (root / EMBEDDINGS_FILE).exists():
            self.embeddings = read_embeddings_json(root / EMBEDDINGS_FILE)
        return normal, qa, [], heldout

    def _build_tokenizer(self) -> WordTokenizer:
        """The reference's make_word2id over the embeddings' keys, or over every word we have."""
        words = {
            w
            for s1, s2 in self.normal_pairs + self.train_qa + self.dev_qa + self.heldout_qa
            for w in split_words(s1 + " " + s2)
        }
        leaked = sorted(words & set(self.hidden_words))
        if leaked:
            raise ValueError(
                f"hidden words {leaked} occur in the pairs; a hidden word must never "
                "be seen in training or validation"
            )
        if self.embeddings is None:
            # Every world's vocabulary holds sophia (a hidden word or a character), so the two
            # stages of prepared embeddings share one word list; `hidden_words=()` leaves it out.
            return WordTokenizer.from_words(words | set(self.hidden_words))
        path = Path(self.data_dir) / EMBEDDINGS_FILE
        missing = sorted((words | set(self.hidden_words)) - set(self.embeddings))
        if missing:
            raise ValueError(
                f"{path}: no vector for {len(missing)} words of the pairs or "
                f"hidden_words, e.g. {missing[:8]}"
            )
        return WordTokenizer.from_words(self.embeddings)

    def _check_block_size(self, block_size: int | None) -> int:
        needed = max(
            len(encode_pair(self.tokenizer, s1, s2)) - 1
            for s1, s2 in self.train_pairs + self.val_normal + self.dev_qa + self.heldout_qa
        )
        if block_size is None:
            return needed
        if block_size < needed:
            raise ValueError(
                f"block_size={block_size} is smaller than the longest pair needs "
                f"({needed} tokens: <BOS> s1 s2 <EOS> minus one)"
            )
        return block_size

    def _hidden_token_ids(self) -> list[int]:
        """Ids of vocabulary words (not specials) that no training label ever targets."""
        targets = {
            i for s1, s2 in self.train_pairs for i in encode_pair(self.tokenizer, s1, s2)[1:]
        }
        return [
            i for i, w in enumerate(self.tokenizer.vocab) if w not in SPECIALS and i not in targets
        ]

    def world_grammar(self) -> WorldGrammar:
        """The grammar and facts of this world, for the meter (with `data_dir`: the generated
        world's, whose text the reference's files hold)."""
        return world_grammar(self.world, self.qa_phrasings)

    def embedding_weight(self) -> torch.Tensor | None:
        """The embeddings file of `data_dir` as a (vocab_size, d) matrix, None without one."""
        if self.embeddings is None:
            return None
        return embedding_matrix(self.embeddings, self.tokenizer)

    def save_reference_files(self, directory: str | Path) -> list[Path]:
        """Write all normal pairs, the training QA and the held-out QA in the reference's format."""
        return save_reference_files(directory, self.normal_pairs, self.train_qa, self.heldout_qa)

    def _loader(self, dataset: Dataset, sampler: DistributedSampler | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=PadCollate(self.tokenizer.pad_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=pin_memory(self.trainer),
        )

    def dataset(self, pairs: Sequence[Pair]) -> PairDataset:
        """`pairs` as a dataset, its QA pairs trained as `qa_loss` says."""
        questions = self.train_qa + self.dev_qa + self.heldout_qa if self.qa_loss == "answer" else []
        return PairDataset(pairs, self.tokenizer, frozenset(q for q, _ in questions))

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        dataset = self.dataset(self.train_pairs)
        sampler = ResumableShuffle(dataset, self.batch_size, self.seed, self.train_cursor, world, rank)
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.val_pairs)

    @property
    def test_pairs(self) -> list[Pair]:
        """The generated world's left-out normal pairs that this vocabulary and block fit, then the
        held-out QA when `heldout_qa_split="test"`."""
        return self.test_normal + (self.heldout_qa if self.heldout_qa_split == "test" else [])

    @property
    def test_normal(self) -> list[Pair]:
        """The test split's narrative part: the normal pairs the world left out, seen by no split."""
        if self.data_dir is not None:
            raise ValueError(f"the pair files in {self.data_dir} hold no test split (only training "
                             "and validation); use validate, or data_dir: null for the generated world")
        tok, fits = self.tokenizer, []
        world = generate_world(self.seed, self.world, self.qa_phrasings)
        for s1, s2 in left_out_normal_pairs(world):
            ids = encode_pair(tok, s1, s2)
            if tok.unk_id not in ids and len(ids) - 1 <= self.block_size:  # all do for seeds 0, 1, 42
                fits.append((s1, s2))
        return fits

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_pairs)

    def loader(self, pairs: Sequence[Pair]) -> DataLoader:
        """`pairs` batched in order, as validation and test batch theirs (a study scores a part
        of a split with it)."""
        return self._loader(self.dataset(pairs))
