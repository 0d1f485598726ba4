"""AlphaBetaSampling, GatedGPTModule's dial evaluation, the alpha sweep and generation at alpha."""

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from callbacks.alpha_sampling import AlphaBetaSampling
from datamodules.mixture import MixtureDataModule
from datamodules.tokens import Tokens
from datamodules.windows import Windows
from succu import generate, sweep
from succu.dial import DialSampler
from succu.modules.gated_gpt import GatedGPTModule
from succu.runs import AtomicCheckpointIO
from tests.ddp_probe import StopAt
from tests.tiny import tiny_module

TINY = dict(n_layer=1, n_head=2, n_embd=16, warmup_steps=2)


class Recorder(L.Callback):
    """The dial and the rows each training step actually received."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append((batch["alpha"].tolist(), batch["source"].tolist(),
                           batch["input_ids"][:, :4].tolist()))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def datamodule(cache_dir):
    """A fresh tiny mixture per use: its window streams start from zero every time."""
    def make(seed=0, num_workers=0):
        windows = Windows(block_size=16, batch_size=4, val_windows=8, val_batch_size=4,
                          batches_per_epoch=4, seed=seed, num_workers=num_workers)
        return MixtureDataModule(windows=windows, tokens=Tokens(cache_dir=cache_dir))

    return make


def fit(make_dm, root, steps, ckpt_path=None, per_sample=False, stop_at=None, workers=0):
    L.seed_everything(0, verbose=False)
    dm = make_dm(num_workers=workers)
    module = tiny_module(GatedGPTModule, vocab_size=dm.vocab_size, block_size=dm.block_size, **TINY)
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, val_check_interval=3,
        check_val_every_n_epoch=None, num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
        callbacks=[AlphaBetaSampling(per_sample=per_sample), recorder,
                   L.pytorch.callbacks.ModelCheckpoint(dirpath=root, filename="last",
                                                       enable_version_counter=False),
                   *([StopAt(stop_at)] if stop_at else [])],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module, recorder.steps


def test_dial_draws_follow_beta_and_bernoulli():
    alpha, corpus = DialSampler(per_sample=True).draw(seed=1, n=100_000)
    # Beta(0.5, 0.5): mean 1/2, variance 1/8; corpus ~ Bernoulli(alpha): P(1) = E[alpha] = 1/2,
    # and E[alpha | corpus = 1] = E[alpha^2] / E[alpha] = 3/4.
    assert alpha.mean().item() == pytest.approx(0.5, abs=0.01)
    assert alpha.var().item() == pytest.approx(0.125, abs=0.003)
    assert alpha[corpus == 1].mean().item() == pytest.approx(0.75, abs=0.01)
    uniform = DialSampler(distribution="uniform", per_sample=True)
    assert uniform.draw(seed=1, n=50_000)[0].var().item() == pytest.approx(1 / 12, abs=0.003)
    shared_alpha, shared_corpus = DialSampler().draw(seed=1, n=8)
    assert len(set(shared_alpha.tolist())) == 1 and len(set(shared_corpus.tolist())) == 1
    with pytest.raises(ValueError, match="distribution must be 'beta' or 'uniform'"):
        AlphaBetaSampling(distribution="gauss")
    with pytest.raises(ValueError, match="Beta parameters must be positive"):
        AlphaBetaSampling(a=0.0)


def test_dial_draws_are_keyed_by_seed_rank_and_batch_index(datamodule):
    """Batch k on rank r depends on (seed, r, k) only: recomputable, distinct across ranks."""
    def batch(rank, index, seed=0):
        dm = datamodule(seed=seed)
        dm.install_dial(DialSampler(per_sample=True))
        dm.setup()
        sampler = dm.sampler()
        sampler.rank = rank
        return sampler.batch(index)

    first = batch(0, 5)
    assert torch.equal(first["alpha"], batch(0, 5)["alpha"])  # recomputed from the index alone
    assert torch.equal(first["input_ids"], batch(0, 5)["input_ids"])
    assert not torch.equal(first["alpha"], batch(1, 5)["alpha"])  # another rank
    assert not torch.equal(first["alpha"], batch(0, 6)["alpha"])  # another batch
    assert not torch.equal(first["alpha"], batch(0, 5, seed=1)["alpha"])  # another seed


def test_a_dial_over_the_wrong_number_of_corpora_is_refused(cache_dir):
    from datamodules.shakespeare import ShakespeareDataModule

    with pytest.raises(ValueError, match="the dial spans 2 sources but the data has 1 corpora"):
        ShakespeareDataModule(tokens=Tokens(cache_dir=cache_dir)).install_dial(DialSampler())


def test_training_rows_come_from_the_drawn_corpus_and_val_logs_the_grid(datamodule, tmp_path):
    trainer, module, steps = fit(datamodule, tmp_path, 6)
    for alpha, source, _ in steps:
        assert len(alpha) == 1 and 0 <= alpha[0] <= 1 and source == [source[0]] * 4
    metrics = trainer.callback_metrics
    for corpus in ("tinystories", "shakespeare"):
        for a in ("0", "0.5", "1"):
            assert f"val/loss/{corpus}@alpha={a}" in metrics
    assert "val/loss" in metrics and "val/ppl" in metrics and "train/alpha" in metrics
    assert float(metrics["val/ppl"]) == pytest.approx(math.exp(float(metrics["val/loss"])), rel=1e-5)


def test_resumed_run_continues_the_same_dial_sequence(datamodule, tmp_path):
    _, straight, full = fit(datamodule, tmp_path / "a", 6)
    fit(datamodule, tmp_path / "b", 6, stop_at=3)
    _, resumed, tail = fit(datamodule, tmp_path / "b", 6, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert tail == full[3:]
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_per_sample_dial(datamodule, tmp_path):
    _, _, steps = fit(datamodule, tmp_path, 4, per_sample=True)
    alphas = np.array([s[0] for s in steps])
    assert alphas.shape == (4, 4) and len(np.unique(alphas)) == 16
    sources = np.array([s[1] for s in steps])
    # corpus ~ Bernoulli(alpha): rows drawn from Shakespeare come with the larger alphas here
    assert alphas[sources == 1].mean() > alphas[sources == 0].mean()


def test_dataloader_workers_make_the_same_dial_batches(datamodule, tmp_path):
    _, _, in_process = fit(datamodule, tmp_path / "a", 4, per_sample=True)
    _, _, workers = fit(datamodule, tmp_path / "b", 4, per_sample=True, workers=2)
    assert workers == in_process


def test_alpha_outside_unit_interval_is_refused():
    module = tiny_module(GatedGPTModule, vocab_size=20, block_size=8, **TINY)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        module(torch.zeros(1, 4, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got -0.2"):
        tiny_module(GatedGPTModule, vocab_size=20, block_size=8, eval_alphas=(0.0, -0.2), **TINY)


def test_sweep_and_generation_at_alpha(datamodule, tmp_path, capsys, monkeypatch):
    from succu import fit as succu_fit

    monkeypatch.chdir(tmp_path)
    config = str(Path(__file__).resolve().parents[1] / "configs" / "abcgpt_char.yaml")
    cli = succu_fit.main([
        "--config", config, "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
        "--trainer.limit_val_batches", "2", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--model.init_args.model.n_layer", "1",
        "--model.init_args.model.n_embd", "16", "--model.init_args.model.n_head", "2",
        "--data.init_args.windows.block_size", "16", "--data.init_args.windows.val_windows", "8",
        "--data.init_args.tokens.cache_dir", str(datamodule().cache_dir),
    ])
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    rows = sweep.main(["alpha", "--ckpt", ckpt, "--alphas", "0:1:0.5", "--max_batches", "1",
                       "--out", str(tmp_path / "sweep"), "--cache_dir", str(datamodule().cache_dir)])
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert set(rows[0]) == {"alpha", "tinystories", "shakespeare"}
    assert (tmp_path / "sweep" / "alpha_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| alpha | tinystories | shakespeare |" in (tmp_path / "sweep" / "alpha_sweep.md").read_text()

    texts = generate.main(["--ckpt", ckpt, "--prompt", "once upon", "--alpha_sweep",
                           "--max_new_tokens", "8", "--seed", "1"])
    out = capsys.readouterr().out
    assert len(texts) == 5 and "[alpha=0.25] once upon ->" in out
    with pytest.raises(SystemExit):
        generate.main(["--ckpt", ckpt, "--prompt", "x", "--alpha", "1.5"])
    assert "alpha must be in [0, 1], got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["alpha", "--ckpt", ckpt, "--alphas", "0:2:0.5"])
    assert "alpha must be in [0, 1], got 1.5" in capsys.readouterr().err
