"""The interpolated Kneser-Ney n-gram baseline: against a plain dict implementation, normalisation,
causality, counting inside rows only, checkpoints, config links, and a fit through succu.fit."""

from __future__ import annotations

import dataclasses
import inspect
import io
import math
import random
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from succu import fit
from succu.checkpoint import load_module
from succu.models import ngram as ngram_model
from succu.models.ngram import KneserNeyLM, NgramConfig, max_order
from succu.modules.base import IGNORE_INDEX, LanguageModule
from succu.modules.ngram import NgramModule, check_trainer, training_rows

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ---- a slow, obviously correct reference ------------------------------------------------------
def reference_scorer(rows: list[list[int]], V: int, n: int, fixed: float | None):
    """Interpolated Kneser-Ney straight from the formulas, with dicts: a function of a window x
    returning log p(w | context at t) as a T x V list of lists."""
    raw = [Counter() for _ in range(n + 1)]
    for row in rows:
        for k in range(1, n + 1):
            for j in range(len(row) - k + 1):
                raw[k][tuple(row[j:j + k])] += 1
    cont = [Counter() for _ in range(n + 1)]  # N1+(. g): distinct left neighbours of g
    for k in range(1, n):
        for g in raw[k + 1]:
            cont[k][g[1:]] += 1

    def discount(table: Counter) -> float:
        if fixed is not None:
            return fixed
        n1 = sum(1 for c in table.values() if c == 1)
        n2 = sum(1 for c in table.values() if c == 2)
        return 0.5 if n1 + 2 * n2 == 0 else min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)

    def prob(w: int, h: tuple, kind: str) -> float:
        k = len(h) + 1
        table = (raw if kind == "raw" else cont)[k]
        lower = 1 / V if k == 1 else prob(w, h[1:], "cont")
        seen = {g: c for g, c in table.items() if g[:-1] == h}
        total = sum(seen.values())
        if total == 0:
            return lower
        d = discount(table)
        return max(table.get(h + (w,), 0) - d, 0) / total + d * len(seen) / total * lower

    def score(x: list[int]) -> list[list[float]]:
        return [[math.log(prob(w, tuple(x[max(0, t - n + 2):t + 1]), "raw")) for w in range(V)]
                for t in range(len(x))]

    return score


def ragged_corpus(seed: int, V: int, n_rows: int = 8, max_len: int = 14) -> list[list[int]]:
    """Rows of different lengths over a skewed vocabulary (so counts of 1 and 2 both occur)."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(V)]
    return [rng.choices(range(V), weights, k=rng.randint(2, max_len)) for _ in range(n_rows)]


def padded(rows: list[list[int]], pad: int = -1) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([row + [pad] * (width - len(row)) for row in rows])


def model_on(rows: list[list[int]], V: int, order: int, discount: float | None = None) -> KneserNeyLM:
    model = KneserNeyLM(NgramConfig(vocab_size=V, order=order, discount=discount))
    half = len(rows) // 2  # two updates: the incremental merge is part of what is checked
    model.update(padded(rows[:half]))
    model.update(padded(rows[half:]))
    return model


@pytest.mark.parametrize("discount", [None, 0.6], ids=["estimated", "fixed"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_log_probs_match_the_reference(order, discount):
    V = 6
    rows = ragged_corpus(order, V)
    model = model_on(rows, V, order, discount)
    score = reference_scorer(rows, V, order, discount)
    windows = [[0, 1, 2, 3, 4, 5, 0], (rows[0] * 7)[:7]]  # unseen patterns and a training row
    got = model(torch.tensor(windows)).double()
    want = torch.tensor([score(w) for w in windows], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    if discount is None and order > 1:  # the top order exercises the estimate, not its fallbacks
        d = model.level("raw", order).discount
        assert 0.05 < d < 0.95 and d != 0.5


def test_distributions_sum_to_one_and_unseen_tokens_keep_mass():
    V, order = 9, 4
    rows = ragged_corpus(3, V - 2, n_rows=20)  # tokens 7 and 8 never occur in training
    model = model_on(rows, V, order)
    x = torch.randint(0, V, (5, 12), generator=torch.Generator().manual_seed(0))
    probs = model(x).double().exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, 12, dtype=torch.float64), rtol=0, atol=1e-6)
    assert (probs > 0).all() and (probs[..., 7:] > 0).all()
    # With no counts at all every position is uniform.
    empty = KneserNeyLM(NgramConfig(vocab_size=V, order=order))
    torch.testing.assert_close(empty(x).exp(), torch.full((5, 12, V), 1 / V))


def test_a_position_sees_only_earlier_tokens_of_its_window():
    V, order = 8, 5
    model = model_on(ragged_corpus(5, V, n_rows=30), V, order)
    x = torch.randint(0, V, (3, 10), generator=torch.Generator().manual_seed(1))
    base = model(x)
    for t in (0, 4, 9):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 1) % V
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t])
        assert not torch.equal(out[:, t:], base[:, t:])
    # Position t reads tokens t-order+2 .. t only: a token further back changes nothing.
    far = x.clone()
    far[:, 0] = (far[:, 0] + 1) % V
    assert torch.equal(model(far)[:, order - 1:], base[:, order - 1:])


def test_counting_stays_inside_rows_and_skips_invalid_tokens():
    V = 10
    model = KneserNeyLM(NgramConfig(vocab_size=V, order=3))
    model.update(torch.tensor([[1, 2, -1, 3, 4], [5, 6, 7, -1, -1]]))
    model.merge()
    bigrams = {(int(k) // V, int(k) % V) for k in model.keys[2]}
    assert bigrams == {(1, 2), (3, 4), (5, 6), (6, 7)}  # no (2, 3) across the gap, no (4, 5) across rows
    assert [int(k) for k in model.keys[3]] == [5 * V * V + 6 * V + 7]
    assert sorted(int(k) for k in model.keys[1]) == [1, 2, 3, 4, 5, 6, 7]
    # Continuation counts: each of 2, 4, 6, 7 has one left neighbour; 1, 3, 5 none.
    assert dict(zip(model.cont_keys[1].tolist(), model.cont_counts[1].tolist())) == {2: 1, 4: 1, 6: 1, 7: 1}


def test_incremental_merges_equal_one_update(monkeypatch):
    V, order = 7, 4
    rows = ragged_corpus(11, V, n_rows=40)
    whole = KneserNeyLM(NgramConfig(vocab_size=V, order=order))
    whole.update(padded(rows))
    monkeypatch.setattr(ngram_model, "MERGE_EVERY", 5)  # merge after nearly every update
    parts = KneserNeyLM(NgramConfig(vocab_size=V, order=order))
    for i in range(0, len(rows), 3):
        parts.update(padded(rows[i:i + 3]))
    whole.merge()
    parts.merge()
    for k in range(1, order + 1):
        assert np.array_equal(whole.keys[k], parts.keys[k])
        assert np.array_equal(whole.counts[k], parts.counts[k])
    # The incrementally kept continuation counts equal those rebuilt from the raw counts.
    rebuilt = KneserNeyLM(NgramConfig(vocab_size=V, order=order))
    rebuilt.load_state_dict(parts.state_dict())
    for k in range(1, order):
        assert np.array_equal(parts.cont_keys[k], rebuilt.cont_keys[k])
        assert np.array_equal(parts.cont_counts[k], rebuilt.cont_counts[k])
    assert parts.num_params() == sum(len(set(map(int, whole.keys[k]))) for k in range(1, order + 1))


def test_state_dict_round_trips_through_plain_data_loading():
    V, order = 11, 5
    module = NgramModule(NgramConfig(vocab_size=V, block_size=16, order=order))
    module.model.update(padded(ragged_corpus(2, V, n_rows=25)))  # unmerged: the save merges
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = NgramModule(NgramConfig(vocab_size=V, block_size=16, order=order))
    fresh.load_state_dict(state)
    x = torch.randint(0, V, (4, 16), generator=torch.Generator().manual_seed(2))
    assert torch.equal(fresh(x), module(x))
    other = NgramModule(NgramConfig(vocab_size=V, block_size=16, order=order - 1))
    with pytest.raises(RuntimeError, match="order 5; this model has vocab_size 11, order 4"):
        other.load_state_dict(state)


def test_config_refuses_bad_values_in_one_line():
    for kwargs, message in [
        ({"order": 0}, "order must be at least 1, got 0"),
        ({"discount": 1.0}, r"discount must be in \(0, 1\) or None"),
        ({"discount": 0.0}, r"discount must be in \(0, 1\) or None"),
        ({"discount": float("nan")}, r"discount must be in \(0, 1\) or None"),
        ({"block_size": 0}, "block_size must be at least 1, got 0"),
        ({"vocab_size": 163, "order": 10}, "order 10 with vocab_size 163 .* order <= 8 fits"),
    ]:
        with pytest.raises(ValueError, match=message):
            NgramConfig(**kwargs)
    assert max_order(163) == 8 and max_order(100) == 9 and 100**9 < 2**63 < 100**10
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        KneserNeyLM(NgramConfig(vocab_size=5, order=2))(torch.tensor([[0, 5]]))


def test_module_contract_and_loss():
    fields = {f.name for f in dataclasses.fields(NgramConfig)}
    params = set(inspect.signature(NgramModule.__init__).parameters)
    assert not fields & (params | set(inspect.signature(LanguageModule.__init__).parameters))
    config = NgramConfig(vocab_size=6, block_size=8, order=3)
    module = NgramModule(model=dataclasses.asdict(config), optimizer=torch.optim.SGD)
    assert module.hparams["model"] == dataclasses.asdict(config)
    module.model.update(padded(ragged_corpus(4, 6)))
    x = torch.randint(0, 6, (2, 8), generator=torch.Generator().manual_seed(3))
    labels = torch.randint(0, 6, (2, 8), generator=torch.Generator().manual_seed(4))
    labels[1, 5:] = IGNORE_INDEX
    logp = module(x)
    # The base cross-entropy of log-probabilities is their NLL: log_softmax is the identity.
    nll = F.nll_loss(logp.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(module.loss(logp, labels), nll, rtol=0, atol=1e-6)
    out = module.generate(x[:1, :3], 20, greedy=True)  # past block_size: the window slides
    assert out.shape == (1, 23) and torch.equal(out[:, :3], x[:1, :3])
    assert int(out.max()) < 6


def test_training_rows_mark_padding():
    batch = {"input_ids": torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]),
             "labels": torch.tensor([[2, 3, 9, IGNORE_INDEX], [5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])}
    assert training_rows(batch).tolist() == [[1, 2, 3, 9, -1], [4, 5, -1, -1, -1]]


class Batches(L.LightningDataModule):
    """Fixed batches of windows over a tiny corpus."""

    def __init__(self, n_batches: int, V: int = 7, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, V, (n_batches, 4, 9), generator=g)
        self.batches = [{"input_ids": r[:, :-1], "labels": r[:, 1:]} for r in rows]
        self.tokenizer = None

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.batches, batch_size=None)


@pytest.mark.parametrize("count_epochs", [None, 1])
def test_a_trainer_steps_counts_and_logs(count_epochs):
    data = Batches(n_batches=3)
    module = NgramModule(NgramConfig(vocab_size=7, block_size=8, order=3), count_epochs=count_epochs)
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 6  # NoStep advances the step count of manual optimisation
    expected = KneserNeyLM(NgramConfig(vocab_size=7, order=3))
    for _ in range(2 if count_epochs is None else 1):  # two epochs of the same three batches
        for batch in data.batches:
            expected.update(training_rows(batch))
    x = data.batches[0]["input_ids"]
    assert torch.equal(module.model.cpu()(x), expected(x))
    assert 0 < float(trainer.callback_metrics["train/loss"]) < math.log(7) + 0.5


def test_gradient_clipping_is_a_one_line_error_before_lightning_s_own():
    module = NgramModule(NgramConfig(vocab_size=7, block_size=8, order=3))
    trainer = L.Trainer(max_steps=1, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                        accelerator="cpu", enable_progress_bar=False)
    with pytest.raises(ValueError, match="set trainer.gradient_clip_val: null \\(got 1.0\\)"):
        trainer.fit(module, datamodule=Batches(1))
    check_trainer(L.Trainer(logger=False, accelerator="cpu"))  # the defaults pass


# ---- through the CLI ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One epoch of the succulent world counted through `python -m succu.fit`, from a YAML that
    sets vocab_size and block_size (the data's must replace them), then validated."""
    root = tmp_path_factory.mktemp("ngram")
    config = yaml.safe_load((CONFIGS / "ngram_succulent.yaml").read_text())
    config["model"]["init_args"]["model"].update(vocab_size=7, block_size=5, order=4)
    (root / "ngram.yaml").write_text(yaml.safe_dump(config))
    cli = fit.main(cli_args(root / "ngram.yaml", root / "run", "--trainer.max_steps", "26"))
    return cli, root / "run" / "checkpoints" / "last.ckpt", root / "ngram.yaml"


def cli_args(config: Path, run: Path, *extra: str) -> list[str]:
    return ["--config", str(config), "--trainer.val_check_interval", "26", "--trainer.logger",
            "false", "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar",
            "false", *extra]


def test_data_sizes_replace_the_yaml_values(fitted):
    cli, _, _ = fitted
    cfg, dm = cli.model.model.cfg, cli.datamodule
    assert (cfg.vocab_size, cfg.block_size) == (dm.vocab_size, dm.block_size) != (7, 5)
    assert cli.model.hparams.model["vocab_size"] == dm.vocab_size


def test_a_fit_lowers_val_loss_below_uniform_and_its_checkpoint_round_trips(fitted):
    cli, path, _ = fitted
    V = cli.datamodule.vocab_size
    val_loss = float(cli.trainer.callback_metrics["val/loss"])
    assert cli.trainer.global_step == 26
    assert val_loss < 0.5 * math.log(V), (val_loss, math.log(V))
    loaded = load_module(path)
    ids = torch.tensor([loaded.prompt_ids("is ruby a boy?")])
    assert torch.equal(loaded(ids), cli.model.cpu()(ids))
    assert loaded.model.num_params() == cli.model.model.num_params() > 1000
    answer = loaded.complete(["is ruby a boy?"], max_new_tokens=8, greedy=True)[0]
    assert answer.strip(), answer


def test_a_fit_resumed_mid_epoch_counts_what_an_uninterrupted_one_does(fitted, tmp_path):
    """count_epochs: 1 (the config's) stops at the end of the first epoch's worth of batches, by
    global step: a run stopped at step 10 and resumed to step 30 counts exactly the 26 batches of
    the uninterrupted run, although Lightning resumes it one epoch ahead."""
    cli, _, config = fitted
    fit.main(cli_args(config, tmp_path / "run", "--trainer.max_steps", "10"))
    resumed = fit.main(cli_args(config, tmp_path / "run", "--trainer.max_steps", "30",
                                "--ckpt_path", "last"))
    assert resumed.trainer.global_step == 30
    assert resumed.model.model.num_params() == cli.model.model.num_params()
    ids = torch.tensor([cli.model.prompt_ids("does winy sleep on the window?")])
    assert torch.equal(resumed.model.cpu()(ids), cli.model.cpu()(ids))
