"""The dial over K corpora: gates and routes that reduce to the two-source ones, Dirichlet draws
keyed by (seed, rank, batch index), a 3-source GatedGPT that resumes exactly, `fit test` and
`python -m succu.evaluate --corpus` at each corner, the K-source `--alpha` of generate and the
simplex sweep, the voice meter's TextSplits capability; and the control-code baseline."""

import csv
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from callbacks.alpha_sampling import AlphaBetaSampling
from datamodules.mixture import MixtureDataModule
from datamodules.tokens import Tokens
from datamodules.windows import DIAL_STREAM, Windows, window_seed
from succu import generate, sweep
from succu.dial import (
    DialSampler,
    DirichletDialSampler,
    parse_position,
    position_for,
    simplex_grid,
)
from succu.models.gated_gpt import GatedGPT, GatedGPTConfig
from succu.models.gpt import GPT
from succu.modules.gated_gpt import GatedGPTModule
from succu.nn.gates import (
    route,
    sample_specialties,
    simplex_route,
    simplex_tent,
    tent,
)
from succu.runs import AtomicCheckpointIO
from tests.ddp_probe import StopAt
from tests.tiny import tiny_module

REPO = Path(__file__).resolve().parents[1]
CORPORA = ["tinystories", "shakespeare", "kjv"]
TINY = dict(n_layer=1, n_head=2, n_embd=16, warmup_steps=2, n_sources=3)


def cfg(**kw) -> GatedGPTConfig:
    return GatedGPTConfig(**{**dict(vocab_size=31, block_size=16, n_layer=2, n_head=4, n_embd=16), **kw})


def two_source(x: torch.Tensor) -> torch.Tensor:
    """(..., 2) simplex points (1 - x, x) of two-source numbers x."""
    return torch.stack([1.0 - x, x], dim=-1)


# ---- gates and routes ------------------------------------------------------------------------
@pytest.mark.parametrize("narrowness", [0.25, 0.7, 1.0, 1.5, 3.0])
def test_the_simplex_gate_is_the_tent_for_two_sources(narrowness):
    g = torch.Generator().manual_seed(int(narrowness * 100))
    m = torch.cat([torch.rand(4000, generator=g, dtype=torch.float64),
                   torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)])
    alpha = torch.cat([torch.rand(6, generator=g, dtype=torch.float64),
                       torch.tensor([0.0, 1.0], dtype=torch.float64)])
    for a in alpha:  # one dial position
        torch.testing.assert_close(simplex_tent(two_source(a), two_source(m), narrowness),
                                   tent(float(a), m, narrowness), rtol=0, atol=1e-7)
    # one position per row, in float32 as the model runs
    got = simplex_tent(two_source(alpha.float()), two_source(m.float()), narrowness)
    torch.testing.assert_close(got, tent(alpha.float(), m.float(), narrowness), rtol=0, atol=1e-6)


def test_the_simplex_route_is_the_route_for_two_sources():
    m = torch.rand(500, generator=torch.Generator().manual_seed(0))
    for source in (0, 1):
        assert torch.equal(simplex_route(source, two_source(m)), route(source, m))
    rows = torch.tensor([1, 0, 0, 1])
    assert torch.equal(simplex_route(rows, two_source(m)), route(rows, m))


def test_the_three_source_gate_peaks_at_its_specialty():
    rng = np.random.default_rng(0)
    m = torch.from_numpy(rng.dirichlet([0.5] * 3, 300))
    at_m = torch.stack([simplex_tent(m[i], m, 1.0)[i] for i in range(len(m))])
    torch.testing.assert_close(at_m, torch.ones(len(m), dtype=m.dtype))
    grid = torch.tensor(simplex_grid(3, 0.05), dtype=m.dtype)
    assert (simplex_tent(grid, m, 1.0) <= 1.0 + 1e-12).all()  # nowhere above its own peak
    # Each unit is off at its farthest corner (narrowness 1; 0 up to the rounding of its
    # distance), and a specialist e_k is on only at its own corner, at a quarter at the centre.
    far = torch.eye(3, dtype=m.dtype)[m.argmin(-1)]
    at_far = torch.stack([simplex_tent(far[i], m)[i] for i in range(len(m))])
    torch.testing.assert_close(at_far, torch.zeros(len(m), dtype=m.dtype), rtol=0, atol=1e-12)
    corners = torch.eye(3, dtype=m.dtype)
    torch.testing.assert_close(simplex_tent(corners, corners), corners)
    centre = simplex_tent(torch.full((3,), 1 / 3, dtype=m.dtype), corners)
    torch.testing.assert_close(centre, torch.full((3,), 0.25, dtype=m.dtype))


def test_two_source_specialties_keep_the_beta_draw():
    model = GatedGPT(cfg(mask_seed=7))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(model.m_embd, sample_specialties(16, g))
    assert torch.equal(model.m_mlp, sample_specialties(2 * 64, g).view(2, 64))
    three = GatedGPT(cfg(n_sources=3))
    assert three.m_embd.shape == (16, 3) and three.m_mlp.shape == (2, 64, 3) and three.m_head.shape == (2, 4, 3)
    torch.testing.assert_close(three.specialties().sum(-1), torch.ones(16 + 128 + 8))


# ---- a 3-source model --------------------------------------------------------------------------
def test_three_source_model_per_row_and_routing():
    torch.manual_seed(0)
    model = GatedGPT(cfg(n_sources=3)).eval()
    ids = torch.randint(0, 31, (2, 9))
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    both = model(ids, alpha=rows)
    torch.testing.assert_close(both[1], model(ids[1:], alpha=[0.2, 0.3, 0.5])[0])
    assert not torch.allclose(both[0], model(ids[:1], alpha=(0.0, 0.0, 1.0))[0])
    with pytest.raises(ValueError, match="alpha must be a point of the 3-source simplex"):
        model(ids, alpha=0.5)
    routed = GatedGPT(cfg(n_sources=3, routing=True)).train()
    routed.m_mlp[0, :] = torch.tensor([0.2, 0.3, 0.5])
    routed.m_mlp[0, 5] = torch.tensor([0.0, 0.0, 1.0])  # a pure corpus-2 unit
    routed(ids, alpha=[0.3, 0.3, 0.4], source=0).logsumexp(-1).mean().backward()
    grad = routed.transformer.h[0].mlp.c_fc.weight.grad
    assert torch.all(grad[5] == 0) and grad[4].abs().sum() > 0


# ---- Dirichlet draws -------------------------------------------------------------------------
def test_dirichlet_draws_follow_dirichlet_and_categorical():
    sampler = DirichletDialSampler(concentration=(0.5, 1.0, 2.0), per_sample=True)
    alpha, source = sampler.draw(seed=3, n=100_000)
    assert alpha.shape == (100_000, 3) and sampler.n_sources == 3
    torch.testing.assert_close(alpha.double().sum(-1), torch.ones(100_000, dtype=torch.float64))
    mean = np.array([0.5, 1.0, 2.0]) / 3.5
    np.testing.assert_allclose(alpha.mean(0).numpy(), mean, atol=0.01)
    np.testing.assert_allclose(np.bincount(source.numpy(), minlength=3) / 100_000, mean, atol=0.01)
    assert alpha[source == 2, 2].mean() > alpha[source != 2, 2].mean()
    shared = DirichletDialSampler(concentration=(1.0, 1.0, 1.0)).draw(seed=3, n=5)
    assert len(set(map(tuple, shared[0].tolist()))) == 1 and len(set(shared[1].tolist())) == 1
    with pytest.raises(ValueError, match="concentration"):
        DirichletDialSampler(concentration=(1.0, 0.0, 1.0))


def test_dirichlet_draws_are_keyed_by_seed_rank_and_batch_index():
    sampler = AlphaBetaSampling(concentration=0.3, per_sample=True).sampler_for(3)

    def draw(seed, rank, index):
        return sampler.draw(window_seed(seed, rank, index, DIAL_STREAM), 8)

    first = draw(0, 0, 5)
    assert torch.equal(first[0], draw(0, 0, 5)[0]) and torch.equal(first[1], draw(0, 0, 5)[1])
    for other in (draw(0, 1, 5), draw(0, 0, 6), draw(1, 0, 5)):  # rank, batch, seed
        assert not torch.equal(first[0], other[0])


def test_two_corpora_keep_the_beta_sampler():
    callback = AlphaBetaSampling(a=0.2, b=0.2, per_sample=True, concentration=0.7)
    assert callback.sampler_for(2) == DialSampler(a=0.2, b=0.2, per_sample=True)
    seed = window_seed(0, 0, 3, DIAL_STREAM)
    ours, theirs = callback.sampler_for(2).draw(seed, 8), DialSampler(a=0.2, b=0.2, per_sample=True).draw(seed, 8)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert callback.sampler_for(3).concentration == (0.7, 0.7, 0.7)
    with pytest.raises(ValueError, match="needs `concentration`"):
        AlphaBetaSampling(a=0.2, b=0.5).sampler_for(3)


# ---- fit, resume, generate, sweep ----------------------------------------------------------------
@pytest.fixture(scope="module")
def make_dm(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))

    def make(corpora=CORPORA):
        windows = Windows(block_size=16, batch_size=4, val_windows=8, val_batch_size=4,
                          batches_per_epoch=4, seed=0)
        return MixtureDataModule(corpora=corpora, windows=windows, tokens=Tokens(cache_dir=cache))

    return make


class Recorder(L.Callback):
    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append((batch["alpha"].tolist(), batch["source"].tolist()))


def fit(make_dm, root, steps, ckpt_path=None, stop_at=None):
    L.seed_everything(0, verbose=False)
    dm = make_dm()
    module = tiny_module(GatedGPTModule, vocab_size=dm.vocab_size, block_size=dm.block_size,
                         eval_alphas=[[1, 0, 0], [0.2, 0.3, 0.5]], **TINY)
    recorder = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, val_check_interval=3,
        check_val_every_n_epoch=None, num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()],
        callbacks=[AlphaBetaSampling(concentration=0.3, per_sample=True), recorder,
                   L.pytorch.callbacks.ModelCheckpoint(dirpath=root, filename="last",
                                                       enable_version_counter=False),
                   *([StopAt(stop_at)] if stop_at else [])],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module, recorder.steps


@pytest.fixture(scope="module")
def straight(make_dm, tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    trainer, module, steps = fit(make_dm, root, 6)
    return trainer, module, steps, str(root / "last.ckpt")


def test_three_source_fit_logs_corners_and_resumes_exactly(make_dm, straight, tmp_path):
    trainer, module, full, _ = straight
    metrics = trainer.callback_metrics
    for corpus in CORPORA:
        assert f"val/loss/{corpus}@alpha=1,0,0" in metrics and f"val/loss/{corpus}@alpha=0.2,0.3,0.5" in metrics
    assert "val/loss" in metrics and "train/corpus2_share" in metrics
    assert all(len(alpha) == 4 and len(alpha[0]) == 3 for alpha, _ in full)
    fit(make_dm, tmp_path, 6, stop_at=3)
    _, resumed, tail = fit(make_dm, tmp_path, 6, ckpt_path=str(tmp_path / "last.ckpt"))
    assert tail == full[3:]
    for (name, p), q in zip(module.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_fit_test_scores_each_corpus_at_every_eval_position_and_its_own_corner(make_dm, straight):
    trainer, module, _, _ = straight
    logged = trainer.test(module, datamodule=make_dm(), verbose=False)[0]
    own = []
    for k, corpus in enumerate(CORPORA):
        assert f"test/loss/{corpus}@alpha=0.2,0.3,0.5" in logged
        corner = ",".join("1" if j == k else "0" for j in range(3))
        own.append(logged[f"test/loss/{corpus}"])
        if k == 0:  # eval_alphas holds corpus 0's corner: the same number under both names
            assert logged[f"test/loss/{corpus}@alpha={corner}"] == pytest.approx(own[0])
    # the pooled test/loss weighs every corpus at its own corner by its tokens; test/ppl is its exp
    assert min(own) - 1e-6 <= logged["test/loss"] <= max(own) + 1e-6
    assert logged["test/ppl"] == pytest.approx(math.exp(logged["test/loss"]), rel=1e-6)


def test_a_model_and_data_of_different_sizes_are_refused(make_dm, tmp_path):
    dm = make_dm(corpora=CORPORA[:2])
    module = tiny_module(GatedGPTModule, vocab_size=dm.vocab_size, block_size=16,
                         eval_alphas=[[1, 0, 0]], **TINY)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, callbacks=[AlphaBetaSampling()])
    with pytest.raises(ValueError, match=r"n_sources=3 but the data has 2 corpora \(tinystories, "
                                         r"shakespeare\): set --model.init_args.model.n_sources 2"):
        trainer.fit(module, datamodule=dm)


@pytest.mark.parametrize("text, message", [
    ("0.2,0.3", "alpha must be 2 non-negative shares summing to 1"),
    ("0.2,-0.1,0.9", r"got 0.2,-0.1,0.9 \(sum 1\)"),
    ("0.2,0.3,0.6", r"summing to 1 \(within 1e-06\), got 0.2,0.3,0.6"),
    ("a,b", "must be a number in \\[0, 1\\] or comma-separated shares"),
    ("1.5", "alpha must be in \\[0, 1\\], got 1.5"),
])
def test_alpha_parsing_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_position(text)


def test_alpha_lengths_must_fit_the_dial():
    assert parse_position("0.2,0.3,0.5") == (0.2, 0.3, 0.5) and parse_position("0.25") == 0.25
    assert position_for((0.25, 0.75), 2) == 0.75 and position_for(0.25, 2) == 0.25
    with pytest.raises(ValueError, match="alpha 0.5 is one number, but this dial spans 3 sources"):
        position_for(0.5, 3)
    with pytest.raises(ValueError, match="alpha 0.5,0.5 has 2 shares, but this dial spans 3 sources"):
        position_for((0.5, 0.5), 3)


@pytest.fixture(scope="module")
def k3_checkpoint(make_dm, tmp_path_factory):
    """configs/abcgpt_char_k3.yaml at toy size through `python -m succu.fit` (the checkpoint then
    records its datamodule, which the sweep rebuilds)."""
    from succu import fit as succu_fit

    root, cache = tmp_path_factory.mktemp("k3"), str(make_dm().cache_dir)
    cli = succu_fit.main([
        "--config", str(REPO / "configs" / "abcgpt_char_k3.yaml"), "--trainer.max_steps", "3",
        "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root), "--model.init_args.model.n_layer", "1",
        "--model.init_args.model.n_embd", "16", "--model.init_args.model.n_head", "2",
        "--data.init_args.windows.block_size", "16", "--data.init_args.windows.val_windows", "8",
        "--data.init_args.tokens.cache_dir", cache,
        # the config's end-of-fit sweep (its last callback) on a coarse grid, no voice: the
        # dashboard is tested in tests/test_logging.py
        "--trainer.callbacks.init_args.step", "0.5", "--trainer.callbacks.init_args.voice", "0",
    ])
    return cli.trainer.checkpoint_callback.best_model_path, cache


def test_generate_and_sweep_a_three_source_checkpoint(k3_checkpoint, tmp_path, capsys):
    ckpt, cache = k3_checkpoint
    texts = generate.main(["--ckpt", ckpt, "--prompt", "the", "--alpha", "0.2,0.3,0.5",
                           "--max_new_tokens", "6"])
    assert len(texts) == 1 and "[alpha=0.2,0.3,0.5] the ->" in capsys.readouterr().out
    assert len(generate.main(["--ckpt", ckpt, "--prompt", "the", "--alpha_sweep", "--max_new_tokens", "4"])) == 4
    with pytest.raises(SystemExit):
        generate.main(["--ckpt", ckpt, "--prompt", "x", "--alpha", "0.5"])
    assert "alpha 0.5 is one number, but this dial spans 3 sources" in capsys.readouterr().err
    rows = sweep.main(["alpha", "--ckpt", ckpt, "--step", "0.5", "--max_batches", "1", "--voice", "2",
                       "--out", str(tmp_path), "--cache_dir", cache])
    assert [r["alpha"] for r in rows] == simplex_grid(3, 0.5) and len(rows) == 6
    assert all(math.isfinite(r[c]) for r in rows for c in CORPORA)
    header = next(csv.reader(open(tmp_path / "alpha_sweep.csv")))
    assert header == [*(f"alpha_{c}" for c in CORPORA), *CORPORA]
    for name in ("alpha_sweep.png", "voice.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    shares = list(csv.DictReader(open(tmp_path / "voice.csv")))
    assert len(shares) == 6 and all(abs(sum(float(r[c]) for c in CORPORA) - 1) < 1e-9 for r in shares)
    assert "voice meter: accuracy on 200-character validation windows" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["alpha", "--ckpt", ckpt, "--alphas", "1,0;0,1", "--out", str(tmp_path)])
    assert "has 2 shares, but this dial spans 3 sources" in capsys.readouterr().err


def test_evaluate_scores_each_corpus_at_its_own_corner_as_fit_test(k3_checkpoint, capsys):
    from succu import evaluate
    from succu.analysis.alpha_sweep import sweep as sweep_losses
    from succu.checkpoint import load_datamodule, load_module

    ckpt, cache = k3_checkpoint
    scores = evaluate.main(["--ckpt", ckpt, "--corpus", "--cache_dir", cache])
    assert "scoring each corpus at its own end of the dial (corpus k at the corner e_k)" in capsys.readouterr().err
    module = load_module(ckpt)
    dm = load_datamodule(ckpt, module, cache_dir=cache)
    corners = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    rows = sweep_losses(module, dm.test_batches(), corners, CORPORA)
    for k, corpus in enumerate(CORPORA):
        assert scores[f"{corpus} (test)"]["loss"] == pytest.approx(rows[k][corpus], rel=1e-5)
    shares = evaluate.main(["--ckpt", ckpt, "--corpus", "kjv", "--alpha", "0.2,0.3,0.5", "--cache_dir", cache])
    assert list(shares) == ["kjv (test)"] and shares["kjv (test)"]["loss"] != scores["kjv (test)"]["loss"]


def test_the_voice_meter_needs_text_splits_and_positions_are_checked():
    from succu.analysis.voice import corpus_texts
    from succu.contracts import CapabilityError
    from succu.dial import as_position

    with pytest.raises(CapabilityError, match="the voice meter needs a datamodule that can give the "
                                              "normalised text of each corpus's train/val/test split"):
        corpus_texts(object(), "train")
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'dev'"):
        MixtureDataModule().split_texts("dev")
    assert as_position(1) == 1.0 and as_position([0.2, 0.3, 0.5]) == (0.2, 0.3, 0.5)
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\], got 1.5"):
        as_position(1.5)


# ---- the control-code baseline ---------------------------------------------------------------
def shifted_gpt(model: GatedGPT, code: torch.Tensor) -> GPT:
    """The plain GPT with `code` added to every position embedding: the control code by hand."""
    plain = GPT(cfg()).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("m_", "style"))}
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"] + code
    plain.load_state_dict(state)
    return plain


def test_control_code_interpolates_style_vectors_and_applies_no_gates(monkeypatch):
    torch.manual_seed(6)
    model = GatedGPT(cfg(dial="control_code")).eval()
    s0, s1 = model.style.detach()
    assert torch.equal(model.style_vector(0.0), s0) and torch.equal(model.style_vector(1.0), s1)
    assert torch.equal(model.style_vector(0.3), (1 - torch.tensor(0.3)) * s0 + torch.tensor(0.3) * s1)
    monkeypatch.setattr(model, "dial", lambda *a, **k: pytest.fail("a control-code model gated"))
    ids = torch.randint(0, 31, (2, 10))
    for alpha in (0.0, 0.3, 1.0):
        code = model.style_vector(alpha).detach()
        torch.testing.assert_close(model(ids, alpha=alpha), shifted_gpt(model, code)(ids), rtol=0, atol=1e-5)
    rows = model(ids, alpha=torch.tensor([0.0, 0.3]))
    torch.testing.assert_close(rows[1], model(ids[1:], alpha=0.3)[0])
    assert set(GatedGPT(cfg()).state_dict()) == set(model.state_dict()) - {"style"}


def test_three_source_control_code_depends_on_alpha_only_through_the_vector():
    torch.manual_seed(7)
    model = GatedGPT(cfg(dial="control_code", n_sources=3)).eval()
    with torch.no_grad():
        model.style[2] = (model.style[0] + model.style[1]) / 2
    ids = torch.randint(0, 31, (1, 8))
    torch.testing.assert_close(model.style_vector([0.0, 0.0, 1.0]), model.style_vector([0.5, 0.5, 0.0]))
    torch.testing.assert_close(model(ids, alpha=[0.0, 0.0, 1.0]), model(ids, alpha=[0.5, 0.5, 0.0]))
    assert not torch.allclose(model(ids, alpha=[1.0, 0.0, 0.0]), model(ids, alpha=[0.0, 1.0, 0.0]))


def test_ternary_plot_places_each_share_at_its_corner_and_three_panels_a_row():
    from succu.analysis.plots import TERNARY_CORNERS, plt, ternary_figure, ternary_xy

    xs, ys = ternary_xy([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1 / 3, 1 / 3, 1 / 3)])
    assert list(zip(xs, ys))[:3] == list(TERNARY_CORNERS)
    assert (xs[3], ys[3]) == pytest.approx((0.5, 3**0.5 / 6))  # the centroid
    points = simplex_grid(3, 0.5)
    panels = {f"p{i}": [float(j) for j in range(len(points))] for i in range(4)}
    fig = ternary_figure(points, panels, CORPORA, "loss", "t")
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titled == ["p0", "p1", "p2", "p3"]
    assert fig.axes[0].get_position().y0 > fig.axes[3].get_position().y1  # the fourth starts a second row
    plt.close(fig)
