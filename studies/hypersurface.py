"""The hypersurface study: frozen random latents adapted per context, against trained embeddings.

    python -m studies.hypersurface [--jobs 2] [--directions tinystories,shakespeare] [--seeds 0,1,2]
                                   [--lrs 3e-4,1e-3,3e-3] [--cap 6000] [--out runs/bench_hypersurface]
    python -m studies.hypersurface --separate [--steps S]   # the output layer apart from T_t
    python -m studies.hypersurface --quick [--separate]     # smoke test: the whole path, few steps

The regime the write-up (../shared/seeds/adaptive-latent-hypersurfaces.txt) argues about: a BPE
vocabulary of 4,096 (V >> d = 128), trained on the training splits of TinyStories, Shakespeare and
the King James text, so the vocabulary holds tokens the training corpus never shows. Every run
trains through the product, `succu.fit.main` (what `python -m succu.fit` runs), from
configs/hypersurface_bpe_<corpus>.yaml plus the overrides printed below (variant, sizes, seed, lr,
steps), and is scored by the same Trainer's `test` on the test splits of all three corpora.

Models (d = 128, one body block and a one-block hypernetwork for the variants; two body blocks
for the baselines, the hypernetwork's block moved into the body):
    film, lowrank-r1, lowrank-r8, orthogonal   T_t on the input lookups and on the readout
    input-only     the commenter's smaller test: FiLM T_t on the context's lookups only, readout a
                   trained head W initialised to E (b1 plus the input transform; b1 at init)
    input-only-lowrank, input-only-orthogonal   the same with the rank-1 lowrank or orthogonal T_t
    b0             trainable tied E (a plain GPT), initialised to the frozen variants' E
    b1             frozen E on input, trained head W = E at init
    b2             frozen E, one learned context-free T
    <model>+bias   a full variant, b0 or b2 with the trained per-token output bias c (zero at init)
Parameters are matched on everything but the token-indexed tables (b0's E, the head W of b1 and
the input-only models, V x d each; the output bias, V): the MLP width `mlp_hidden` of every block
is solved per model so those counts lie within 2% of b0's at the GPT-2 width 4d (this script
stops otherwise); the tables are printed too.
Per seed every model sees the same E (latent_seed = seed), training windows and test windows.

Protocol, per training direction (TinyStories or Shakespeare as the one training corpus):
    1. B0 at each learning rate, seed 0, with callbacks.plateau.PlateauStop: it stops once its
       validation loss improved by less than 1% over 1,000 steps, or at `--cap` steps. B0's
       learning rate is the one with the lowest val loss where it stopped; that stop is S.
    2. Every other model at each learning rate, seed 0, for S steps; its learning rate is the one
       with the lowest val loss at S.
    3. Every model at its learning rate, seeds 1 and 2, for S steps (B0 without the stop rule).
With `--steps S` there is no step 1: S is given, and B0 is a model like the others. In steps 1
and 2 a grid whose lowest val loss sits at an edge is widened half a decade past it, a run at a
time, until the lowest sits inside (`--widenings`, default 3).

`--separate` takes the frozen output layer apart from the hypernetwork. Read against the frozen
E, a full variant's logits stay in E's 128-dimensional column space at V = 4,096, whatever T_t is,
so its loss against B0 is decided by the output layer (the report says so instead of "does not
hold"). It trains on TinyStories for S steps (--steps; default: the S of the default study trained
on TinyStories, as its results page gives it) the models whose pairs it reports:
    the frozen output layer   b1 vs b2, b2+bias vs b2, b1 vs b2+bias
    the hypernetwork          each full variant+bias vs b2+bias; each input-only model vs b1
    claim (1) with the bias   each full variant+bias, and b2+bias, vs b0+bias
each model at its learning rate from the same grid, on validation at S, three seeds. Every
model's grid (B0's plateau sweep too) is widened half a decade past whichever edge holds its lowest
validation loss, until the lowest sits inside (at most --widenings steps; the report names any model
still at an edge).
The schedule is warmup then constant (min_lr_ratio 1.0), so a curve flattens by itself, not by a
decaying rate. Each model's own plateau step (the first validation at which the same rule would
fire) is read from its curve. Test losses are split by the predicted token's count in the
training split: rare (< 10, unseen included), unseen, common. Orthogonality: histograms of |cos|
between rows of E at initialisation (the same for every model of a seed) and, at the end, of b0's
trained E, of the head W, and of T_t E at 8 test contexts of the training corpus.
Tables give mean +- sd over seeds; a claim "holds"/"does not hold" only when the difference to B0
(or, in --separate's pairs, to b) exceeds 2 sqrt(sd_a^2 + sd_b^2); otherwise "no difference
detected at this scale". Runs go to `--jobs` processes with one torch thread each; each run's
result is a file under --out/runs, so a rerun resumes (a study cut short reports what it finished
with --report_only). The study prints how many runs it makes (the default study 80, --separate
55); what they cost is on its results page, studies/results/hypersurface.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from studies import runner
from studies.runner import StudyRun, offline, saved_run

offline()

import torch  # noqa: E402

from callbacks.plateau import PlateauStop  # noqa: E402
from succu import fit  # noqa: E402
from succu.analysis.latents import cosine_matrix, sample_positions  # noqa: E402
from succu.io import atomic_write  # noqa: E402
from succu.models.hypersurface import HypersurfaceConfig, HypersurfaceLM, random_latents  # noqa: E402
from succu.modules.hypersurface import RARITY  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CORPORA = ["tinystories", "shakespeare", "kjv"]  # the configs' MixtureDataModule corpora, in order
FULL = {  # the variants with T_t on the lookups and on the readout
    "film": {"variant": "film"},
    "lowrank-r1": {"variant": "lowrank", "rank": 1},
    "lowrank-r8": {"variant": "lowrank", "rank": 8},
    "orthogonal": {"variant": "orthogonal", "rank": 1},
}
INPUT_ONLY = {
    "input-only": {"variant": "film", "input_only": True},
    "input-only-lowrank": {"variant": "lowrank", "rank": 1, "input_only": True},
    "input-only-orthogonal": {"variant": "orthogonal", "rank": 1, "input_only": True},
}
BASE = {"b0": {"variant": "b0"}, "b1": {"variant": "b1"}, "b2": {"variant": "b2"}}
MODELS = {**FULL, **INPUT_ONLY, **BASE}
MODELS |= {f"{m}+bias": {**MODELS[m], "output_bias": True} for m in [*FULL, "b0", "b2"]}
STUDY = [*FULL, "input-only", *BASE]  # the default study's models
# --separate: the frozen output layer apart from the hypernetwork, in pairs (a, b) read as "a has
# the lower loss": the output layer's three, then each hypernetwork against its matched baseline
# (with the output bias: b2+bias; input-only: b1), then claim (1) with the output bias.
OUTPUT_LAYER = [("b1", "b2"), ("b2+bias", "b2"), ("b1", "b2+bias")]
HYPERNETWORK = [(f"{m}+bias", "b2+bias") for m in FULL] + [(m, "b1") for m in INPUT_ONLY]
CLAIM_1_BIAS = [(f"{m}+bias", "b0+bias") for m in [*FULL, "b2"]]
SEPARATE = list(dict.fromkeys(m for a, b in OUTPUT_LAYER + HYPERNETWORK + CLAIM_1_BIAS for m in (a, b)))
# S trained on TinyStories: where B0's plateau rule stopped B0 at its best learning rate in the
# default study (studies/results/hypersurface.md, "The 4,096-token BPE study"), --separate's length.
S_TINYSTORIES = 5000
BINS = 100  # |cos| histogram bins on [0, 1]


@dataclass(frozen=True)
class Size:
    """The shared sizes (the configs'), and the protocol's clock."""

    vocab: int = 4096
    n_embd: int = 128
    n_head: int = 4
    n_layer: int = 1  # body blocks of the variants; the baselines get one more
    block_size: int = 32
    val_every: int = 250
    window: int = 1000  # the plateau rule's span
    warmup: int = 200


@dataclass(frozen=True)
class Run(StudyRun):
    direction: str
    model: str
    seed: int
    lr: float
    steps: int
    size: Size
    plateau: bool = False  # stop by the plateau rule (B0's sweep)
    cache_dir: str | None = None

    def configs(self) -> list[Path]:
        return [CONFIGS / f"hypersurface_bpe_{self.direction}.yaml"]


@dataclass
class Row:
    run: Run
    steps: int  # steps trained (B0's sweep: where the plateau rule stopped it)
    stopped_by_rule: bool
    val: float  # in-domain val loss at the end
    test: dict  # test/loss/<corpus>[/<class>] and test/tokens/<corpus>/<class>
    curve: list  # [step, {corpus: val loss}] at every validation
    params: int  # trainable, token tables excluded
    tables: int  # trainable V x d token-table parameters
    mlp_hidden: int
    seconds: float
    hist: dict = field(default_factory=dict)  # end-of-training |cos| histograms by table


# ---- models and their sizes ----------------------------------------------------------------
def model_config(model: str, size: Size, mlp_hidden: int | None) -> HypersurfaceConfig:
    extra = 0 if MODELS[model]["variant"] in ("b0", "b1", "b2") else -1
    return HypersurfaceConfig(vocab_size=size.vocab, block_size=size.block_size, n_embd=size.n_embd,
                              n_head=size.n_head, n_layer=size.n_layer + 1 + extra, n_hyper_layer=1,
                              mlp_hidden=mlp_hidden, **MODELS[model])


def table_params(net: HypersurfaceLM) -> int:
    """Trainable token-indexed parameters: the V x d tables (b0's E, the head W of b1 and the
    input-only models) and the output bias (V)."""
    tables = [net.latents] if isinstance(net.latents, torch.nn.Parameter) else []
    tables += [net.lm_head.weight] if net.lm_head is not None else []
    tables += [net.output_bias] if net.output_bias is not None else []
    return sum(t.numel() for t in tables)


def counts(model: str, size: Size, mlp_hidden: int) -> tuple[int, int]:
    """(trainable parameters without the token tables, the tables') of a model."""
    net = HypersurfaceLM(model_config(model, size, mlp_hidden))
    return net.num_params() - table_params(net), table_params(net)


def target_params(size: Size) -> int:
    """b0's non-table parameters at the GPT-2 width 4d: every model's budget."""
    return counts("b0", size, 4 * size.n_embd)[0]


def matched_width(model: str, size: Size) -> int:
    """The MLP width that puts a model's non-table parameters nearest b0's at width 4d."""
    target = target_params(size)
    a, b = (counts(model, size, w)[0] for w in (4 * size.n_embd, 4 * size.n_embd - 1))
    width = round(4 * size.n_embd - (target - a) / (b - a))  # parameters are linear in the width
    # lowrank-r8's emitter (2 d^2 r weights) can take the whole MLP budget: its blocks then keep
    # a width-1 MLP, and check_match says whether that is still within 2% of b0.
    return max(width, 1)


# ---- one run, in a worker process -----------------------------------------------------------
def argv(run: Run, width: int, tmp: str) -> list[str]:
    cfg = model_config(run.model, run.size, width)
    s = run.size
    out = ["--config", str(CONFIGS / f"hypersurface_bpe_{run.direction}.yaml"),
           "--seed_everything", str(run.seed), "--data.init_args.windows.seed", str(run.seed),
           "--trainer.max_steps", str(run.steps), "--trainer.val_check_interval", str(s.val_every),
           "--model.init_args.optimizer.init_args.lr", str(run.lr),
           "--model.init_args.warmup_steps", str(s.warmup),
           "--data.init_args.windows.block_size", str(s.block_size),
           "--data.init_args.tokens.bpe_vocab_size", str(s.vocab),
           "--trainer.logger", json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                                           "init_args": {"save_dir": tmp, "name": "csv"}}),
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", tmp]
    names = ("variant", "rank", "n_layer", "n_embd", "n_head", "mlp_hidden", "input_only", "output_bias")
    for name in names:
        out += [f"--model.init_args.model.{name}", str(getattr(cfg, name)).lower()]
    out += ["--model.init_args.model.latent_seed", str(run.seed)]
    if run.plateau:
        stop = {"class_path": "callbacks.plateau.PlateauStop", "init_args": {"window": s.window}}
        out += [f"--trainer.callbacks+={json.dumps(stop)}"]
    return out + (["--data.init_args.tokens.cache_dir", run.cache_dir] if run.cache_dir else [])


def read_curve(log_dir: str, corpora: list[str]) -> list:
    """[step, {corpus: val loss}] of every validation, from the run's CSVLogger file."""
    curve = []
    with open(Path(log_dir) / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get(f"val/loss/{corpora[0]}"):
                # The logger's step column counts from 0 (the validation after 5,000 steps says
                # 4999); +1 is the optimizer steps taken, as PlateauStop and S count them.
                curve.append([int(row["step"]) + 1, {c: float(row[f"val/loss/{c}"]) for c in corpora}])
    return curve


def cos_histogram(rows: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """Counts of |cos(r_u, r_v)| over every pair u < v of each table (..., V, d), pooled, in `bins`
    equal bins on [0, 1]: the distribution that coherence (its maximum) summarises by one pair."""
    g = cosine_matrix(rows).abs()
    v = g.size(-1)
    upper = torch.triu(torch.ones(v, v, dtype=torch.bool, device=g.device), diagonal=1)
    return torch.histc(g[..., upper].clamp(0.0, 1.0), bins=bins, min=0.0, max=1.0).long()


def context_tables(model: HypersurfaceLM, input_ids: torch.Tensor, n_contexts: int, seed: int = 0):
    """(input side, readout side) latent tables at n sampled positions of input_ids: T_t E of the
    context transform (n, V, d), or the model's one table (V, d) where it has no T_t; the readout
    side is b1's and input-only's trained head W, b0's trained E, else as the input side."""
    transform = model.transform(input_ids)
    if transform is None or model.hyper is None:
        table = model.latents if transform is None else transform.rows(model.latents, shift=False)
    else:
        index = sample_positions(torch.ones_like(input_ids, dtype=torch.bool), n_contexts, seed)
        table = transform.select(index).rows(model.latents, shift=False)
    readout = model.lm_head.weight if model.lm_head is not None else table
    return table, readout


@torch.no_grad()
def end_histograms(net: HypersurfaceLM, ids: torch.Tensor) -> dict:
    """|cos| histograms at the end: b0's trained E, T_t E (or b2's T E) on the input side, and
    the trained head W where there is one (b1's input E is frozen: its histogram is the init's)."""
    table, readout = context_tables(net, ids, n_contexts=8)
    out = {}
    if net.cfg.variant == "b0":
        out["E"] = cos_histogram(table, BINS).tolist()
    elif net.cfg.variant != "b1":
        out["TE"] = cos_histogram(table, BINS).tolist()
    if readout is not table:
        out["W"] = cos_histogram(readout, BINS).tolist()
    return out


def train_and_score(run: Run) -> Row:
    runner.quiet_worker()
    width = matched_width(run.model, run.size)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        cli = fit.main(argv(run, width, tmp))
        seconds = time.perf_counter() - start
        trainer, module, dm = cli.trainer, cli.model, cli.datamodule
        home = CORPORA[run.direction == "shakespeare"]
        val = float(trainer.callback_metrics[f"val/loss/{home}"])
        curve = read_curve(trainer.logger.log_dir, CORPORA)
        test = {k: float(v) for k, v in trainer.test(module, datamodule=dm, verbose=False)[0].items()}
    rule = next((c for c in trainer.callbacks if isinstance(c, PlateauStop)), None)
    net = module.model.eval()
    ids = next(b["input_ids"] for b in dm.test_batches() if int(b["source"][0]) == CORPORA.index(home))
    return Row(run, trainer.global_step, rule is not None and rule.plateau_step is not None, val, test,
               curve, net.num_params() - table_params(net), table_params(net), width, seconds,
               end_histograms(net, ids))


def execute(run: Run, out: Path) -> Row:
    """Train and score one run, or read its row back when an earlier study made it."""
    return saved_run(run, out, train_and_score, row_from_json)


def row_from_json(data: dict) -> Row:
    run = data.pop("run")
    run["size"] = Size(**run["size"])
    return Row(Run(**run), **data)


# ---- the protocol --------------------------------------------------------------------------
class Study:
    """Which runs the protocol needs, given the rows finished so far (it unfolds as they come)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rows: dict[str, Row] = {}

    def run(self, direction: str, model: str, seed: int, lr: float, steps: int, plateau=False) -> Run:
        return Run(direction, model, seed, lr, steps, self.args.size, plateau, self.args.cache_dir)

    def get(self, runs: list[Run]) -> list[Row] | None:
        """The rows of these runs, or None while any is missing."""
        rows = [self.rows.get(r.key) for r in runs]
        return None if any(r is None for r in rows) else rows

    def widened(self, make: Callable[[float], Run]) -> list[Run]:
        """The grid's runs, then one more past whichever edge holds the lowest val loss, as long
        as it does (`studies.runner.edge_extension`, at most --widenings): the protocol unfolds,
        so each extension is known once the runs before it finished."""
        runs = [make(lr) for lr in self.args.lrs]
        for _ in range(self.args.widenings):
            rows = self.get(runs)
            new = None if rows is None else runner.edge_extension({r.run.lr: r.val for r in rows})
            if new is None:
                break
            runs.append(make(new))
        return runs

    def b0_sweep(self, d: str) -> list[Run]:
        return self.widened(lambda lr: self.run(d, "b0", self.args.seeds[0], lr, self.args.cap, True))

    def stop(self, d: str) -> int | None:
        """S: --steps, else the step where B0's plateau rule (or the cap) stopped B0 at its best
        learning rate (None while B0's sweep runs)."""
        if self.args.steps is not None:
            return self.args.steps
        rows = self.get(self.b0_sweep(d))
        return None if rows is None else min(rows, key=lambda r: r.val).steps

    def sweep(self, d: str, model: str) -> list[Run]:
        if model == "b0" and self.args.steps is None:
            return self.b0_sweep(d)
        return self.widened(lambda lr: self.run(d, model, self.args.seeds[0], lr, self.stop(d)))

    def chosen(self, d: str, model: str) -> Row | None:
        """The seed-0 row at the model's chosen learning rate (lowest val loss at the end)."""
        if self.stop(d) is None:
            return None
        rows = self.get(self.sweep(d, model))
        return None if rows is None else min(rows, key=lambda r: r.val)

    def seed_runs(self, d: str, model: str) -> list[Run]:
        best = self.chosen(d, model)
        return [self.run(d, model, s, best.run.lr, self.stop(d)) for s in self.args.seeds[1:]]

    def ready(self) -> list[Run]:
        """Runs whose inputs are known and that have not finished, in priority order: the first
        direction first, within it B0's sweep (without --steps), then the sweeps and the seeds."""
        out = []
        for d in self.args.directions:
            out += self.b0_sweep(d) if self.args.steps is None else []
            if self.stop(d) is None:
                continue
            for m in self.args.models:
                out += self.sweep(d, m) + (self.seed_runs(d, m) if self.chosen(d, m) else [])
        return [r for r in out if r.key not in self.rows]

    def final(self, d: str, model: str) -> list[Row] | None:
        """Every seed's row of a model at its chosen learning rate (None while any is missing)."""
        best = self.chosen(d, model)
        if best is None:
            return None
        rest = self.get(self.seed_runs(d, model))
        return None if rest is None else [best, *rest]


def progress(row: Row, started: float) -> None:
    r = row.run
    how = " (plateau rule)" if row.stopped_by_rule else ""
    print(f"  [{time.perf_counter() - started:5.0f}s] {r.direction} {r.model} lr {r.lr:g} seed {r.seed}: "
          f"{row.steps} steps{how}, val {row.val:.4f} ({row.seconds:.0f} s)", flush=True)


def execute_all(study: Study, jobs: int, out: Path) -> None:
    """Run what the protocol needs until nothing is left, `jobs` at a time, best first."""
    started = time.perf_counter()
    pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) if jobs > 1 else None
    pending: dict = {}
    try:
        while True:
            busy = {run.key for run in pending.values()}
            for run in [r for r in study.ready() if r.key not in busy]:
                if run.saved(out) is not None or pool is None:
                    study.rows[run.key] = row = execute(run, out)
                    progress(row, started)
                elif len(pending) < jobs:
                    pending[pool.submit(execute, run, out)] = run
            if not pending:
                if not [r for r in study.ready() if r.key not in study.rows]:
                    return
                continue
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                row = future.result()
                study.rows[row.run.key] = row
                del pending[future]
                progress(row, started)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# ---- the report ----------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float]) -> str:
    if any(math.isnan(v) for v in values):
        return "-"  # no such tokens in this split
    m, s = mean_sd(values)
    return f"{m:.3f} ± {s:.3f}"


def compare(a: list[float], b: list[float], lower_is_better: bool = True,
            confined: bool = False) -> str:
    """a against b: 'holds' when a is better beyond 2 sd of the difference, 'does not hold' when
    worse beyond it, else no difference detected. confined: a's logits are read against the frozen
    E alone at V > d, so the design keeps them in E's column space and a worse loss is 'decided by
    the output layer', not a verdict on the idea."""
    if any(math.isnan(v) for v in a + b):
        return "-"
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    if len(a) < 2 or len(b) < 2:
        return "one seed: no verdict"
    gain = (mb - ma) if lower_is_better else (ma - mb)
    bar = 2 * math.hypot(sa, sb)
    worse = "decided by the output layer" if confined else "does not hold"
    word = "holds" if gain > bar else worse if gain < -bar else "no difference detected at this scale"
    return f"{ma - mb:+.3f} (2 sd = {bar:.3f}): {word}"


def versus(rows: list[Row], base: list[Row], key: str, frozen: bool = False) -> str:
    """compare() of one test loss of two models' seeds (nan where a split has no such tokens)."""
    return compare(*([r.test.get(key, math.nan) for r in rs] for rs in (rows, base)), confined=frozen)


def confined(model: str, size: Size) -> bool:
    """Its logits lie in the frozen E's column space, a subspace of R^V when V > d."""
    return model_config(model, size, None).frozen_readout and size.vocab > size.n_embd


def own_plateau(curve: list, corpus: str, window: int, rule: float = 0.01) -> int | None:
    """The first validation at which PlateauStop's rule would fire on this curve."""
    for step, losses in curve:
        earlier = [v[corpus] for s, v in curve if s <= step - window]
        if earlier and earlier[-1] - losses[corpus] < rule * earlier[-1]:
            return step
    return None


def late_gain(curve: list, corpus: str, window: int) -> float:
    """Relative val-loss improvement over the last `window` steps of a curve."""
    end_step, end = curve[-1][0], curve[-1][1][corpus]
    earlier = [v[corpus] for s, v in curve if s <= end_step - window]
    return (earlier[-1] - end) / earlier[-1] if earlier else float("nan")


def hist_stats(counts: list[int]) -> tuple[float, float]:
    """(mean |cos|, 99th percentile |cos|) of a histogram on [0, 1]."""
    total = sum(counts)
    centres = [(i + 0.5) / len(counts) for i in range(len(counts))]
    mean = sum(c * x for c, x in zip(counts, centres)) / total
    run = 0
    for c, x in zip(counts, centres):
        run += c
        if run >= 0.99 * total:
            return mean, x + 0.5 / len(counts)
    return mean, 1.0


def init_histogram(size: Size, seed: int) -> list[int]:
    return cos_histogram(random_latents(size.vocab, size.n_embd, seed), BINS).tolist()


def report_direction(study: Study, d: str, lines: list[str]) -> dict:
    """The direction's tables; returns {model: rows} of the models whose seeds all finished."""
    home = CORPORA[d == "shakespeare"]
    others = [c for c in CORPORA if c != home]
    if study.args.steps is None:
        b0 = study.chosen(d, "b0")
        how = "B0 plateau" if b0.stopped_by_rule else "the cap: B0 had not plateaued"
        how = f"{how}, B0 lr {b0.run.lr:g}"
    else:
        how = "given by --steps"
    lines += [f"### Trained on {d}: S = {study.stop(d)} steps ({how})", "",
              "Learning-rate sweep (seed 0, val loss on " + home + "; * = chosen; the grid widened "
              "half a decade past an edge that held the lowest):", "",
              "| model | val loss at each learning rate tried |", "|---|---|"]
    edges = []
    for m in study.args.models:
        rows = study.get(study.sweep(d, m))
        if rows is None:
            continue
        best = min(rows, key=lambda r: r.val)
        edges += [m] if runner.at_edge({r.run.lr: r.val for r in rows}) else []
        plateau = m == "b0" and study.args.steps is None
        lines.append(f"| {m} | " + ", ".join(
            f"{r.run.lr:g}: {r.val:.4f}{'*' if r is best else ''}" + (f" ({r.steps})" if plateau else "")
            for r in sorted(rows, key=lambda r: r.run.lr)) + " |")
    if edges:
        lines += ["", f"Still at an edge after {study.args.widenings} widenings: {', '.join(edges)}."]
    finals = {m: rows for m in study.args.models if (rows := study.final(d, m)) is not None}
    head = ["model", "params", "tables", "mlp", "lr", "own plateau", f"{home} test", f"{home} rare"]
    for c in others:
        head += [f"{c} test", f"{c} rare"]
    lines += ["", "Test losses (nats per token, mean ± sd over seeds "
              f"{','.join(map(str, study.args.seeds))}); rare = fewer than 10 occurrences in the "
              f"{home} training split (unseen included):", "",
              "| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    target = target_params(study.args.size)
    for m, rows in finals.items():
        r0 = rows[0]
        plateaus = [own_plateau(r.curve, home, study.args.size.window) for r in rows]
        plateau = ", ".join("-" if p is None else str(p) for p in plateaus)
        gap = f" ({r0.params / target - 1:+.1%})"
        cells = [m, f"{r0.params:,}{gap}", f"{r0.tables:,}", str(r0.mlp_hidden), f"{r0.run.lr:g}", plateau]
        for c in [home, *others]:
            cells += [cell([r.test[f"test/loss/{c}"] for r in rows]),
                      cell([r.test.get(f"test/loss/{c}/rare", math.nan) for r in rows])]
        lines.append("| " + " | ".join(cells) + " |")
    split = [(c, k) for c in [home, *others] for k in RARITY[::-1]]  # common, rare, unseen per corpus
    lines += ["", "The same test losses split by the predicted token's count in the training split: common "
              "(10 or more), rare (fewer than 10, unseen included) and unseen:", "",
              "| model | " + " | ".join(f"{c} {k}" for c, k in split) + " |", "|---|" + "---|" * len(split)]
    for m, rows in finals.items():
        lines.append(f"| {m} | " + " | ".join(
            cell([r.test.get(f"test/loss/{c}/{k}", math.nan) for r in rows]) for c, k in split) + " |")
    tokens = finals and next(iter(finals.values()))[0].test
    if tokens:
        n = {(c, k): tokens.get(f"test/tokens/{c}/{k}", 0.0) for c in CORPORA for k in RARITY}
        share = ", ".join(f"{c} {n[c, 'rare']:.0f} of {n[c, 'rare'] + n[c, 'common']:.0f} "
                          f"({n[c, 'unseen']:.0f} unseen)" for c in [home, *others])
        lines += ["", f"Rare test tokens: {share}. Own plateau: the first validation at which the "
                  "1%-over-1,000-steps rule fires on the model's own curve (- : not within S)."]
    return finals


def report_verdicts(study: Study, d: str, finals: dict, lines: list[str]) -> None:
    """Each claim against B0; a loss the frozen readout decided is said to be."""
    if "b0" not in finals:
        return
    home = CORPORA[d == "shakespeare"]
    others = [c for c in CORPORA if c != home]
    b0 = finals["b0"]
    w = study.args.size.window
    lines += ["", f"Claims against B0 (trained on {d}; model - B0, mean over seeds):", "",
              "| model | lower loss (" + home + " test) | keeps improving (late gain) | "
              + " | ".join(f"better OOD ({c})" for c in others) + " | "
              + " | ".join(f"rare tokens ({c})" for c in others) + " |",
              "|---|" + "---|" * (2 + 2 * len(others))]
    for m, rows in finals.items():
        if m == "b0":
            continue
        frozen = confined(m, study.args.size)
        cells = [m, versus(rows, b0, f"test/loss/{home}", frozen),
                 compare([late_gain(r.curve, home, w) for r in rows], [late_gain(r.curve, home, w) for r in b0],
                         lower_is_better=False)]
        cells += [versus(rows, b0, f"test/loss/{c}", frozen) for c in others]
        cells += [versus(rows, b0, f"test/loss/{c}/rare", frozen) for c in others]
        lines.append("| " + " | ".join(cells) + " |")
    if any(confined(m, study.args.size) for m in finals):
        size = study.args.size
        lines += ["", "Decided by the output layer: the model reads its logits against the frozen E "
                  f"alone, so at V = {size.vocab} > d = {size.n_embd} they stay in E's column space "
                  "whatever T_t is; --separate measures the hypernetwork apart from it."]


def report_separation(study: Study, d: str, finals: dict, lines: list[str]) -> None:
    """The frozen output layer apart from the hypernetwork: each pair of OUTPUT_LAYER, HYPERNETWORK
    and CLAIM_1_BIAS whose two models finished, as "a has a lower loss than b" on the home test."""
    home = CORPORA[d == "shakespeare"]
    sections = [("The frozen output layer", "no hypernetwork: b1's trained head, b2's frozen E "
                 "and b2's frozen E with the output bias", OUTPUT_LAYER),
                ("The hypernetwork", "each against its matched baseline: the full variants with "
                 "the output bias against b2+bias, the input-only ones against b1", HYPERNETWORK),
                ("Claim (1) with the output bias", "lower loss than trained embeddings (b0+bias); "
                 "the context-dependent part of the variants' logits still lies in E's column "
                 "space, as b2+bias's does", CLAIM_1_BIAS)]
    for title, what, pairs in sections:
        pairs = [(a, b) for a, b in pairs if a in finals and b in finals]
        if not pairs:
            continue
        lines += ["", f"**{title}**, {what} (trained on {d}; {home} test loss, mean ± sd over seeds):",
                  "", "| a | b | loss of a | loss of b | a - b (2 sd): a lower |",
                  "|---|---|---|---|---|"]
        for a, b in pairs:
            la, lb = ([r.test[f"test/loss/{home}"] for r in finals[m]] for m in (a, b))
            lines.append(f"| {a} | {b} | {cell(la)} | {cell(lb)} | {compare(la, lb)} |")


def report_orthogonality(study: Study, finals: dict, lines: list[str]) -> None:
    if not finals:
        return
    lines += ["", "Orthogonality: |cos| between latent rows (mean; 99th percentile), seed means:", "",
              "| table | mean abs cos | 99th pct |", "|---|---|---|"]
    init = [hist_stats(init_histogram(study.args.size, s)) for s in study.args.seeds]
    lines.append(f"| E at init (every model) | {statistics.mean(x[0] for x in init):.4f} | "
                 f"{statistics.mean(x[1] for x in init):.3f} |")
    for m, rows in finals.items():
        for name in rows[0].hist:
            stats = [hist_stats(r.hist[name]) for r in rows]
            te = "T E" if MODELS[m]["variant"] == "b2" else "T_t E"
            label = {"E": "trained E", "TE": te, "W": "head W"}[name]
            lines.append(f"| {m}: {label} at the end | {statistics.mean(x[0] for x in stats):.4f} | "
                         f"{statistics.mean(x[1] for x in stats):.3f} |")


def plot_direction(study: Study, d: str, finals: dict, figures: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    home = CORPORA[d == "shakespeare"]
    fig, axes = plt.subplots(1, len(CORPORA), figsize=(5 * len(CORPORA), 4), sharex=True)
    for m, rows in finals.items():
        for ax, c in zip(axes, [home, *[c for c in CORPORA if c != home]]):
            steps = [s for s, _ in rows[0].curve]
            mean = [statistics.mean(r.curve[i][1][c] for r in rows) for i in range(len(steps))]
            ax.plot(steps, mean, label=m, lw=1.2, ls="--" if m.startswith("b") else "-")
            ax.set_title(f"val loss on {c}" + (" (in domain)" if c == home else ""))
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Trained on {d}: learning curves, mean over seeds")
    fig.tight_layout()
    curves = figures / f"hypersurface_curves_{d}.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    centres = [(i + 0.5) / BINS for i in range(BINS)]
    init = init_histogram(study.args.size, study.args.seeds[0])
    ax.plot(centres, [c / sum(init) for c in init], color="black", lw=2, label="E at init")
    for m, rows in finals.items():
        for name, counts_ in rows[0].hist.items():
            ax.plot(centres, [c / sum(counts_) for c in counts_], lw=1, label=f"{m}: {name} at end")
    ax.set_yscale("log")
    ax.set_xlabel("|cos| between two rows")
    ax.set_ylabel("share of pairs")
    ax.set_title(f"Trained on {d}: |cos| between latent rows (seed {study.args.seeds[0]})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    hist = figures / f"hypersurface_cos_{d}.png"
    fig.savefig(hist, dpi=110)
    plt.close(fig)
    return [curves, hist]


def check_match(finals: dict, size: Size) -> None:
    """Non-table parameters within 2% of b0's, or the study's numbers mean nothing."""
    target = target_params(size)
    for m, rows in finals.items():
        gap = rows[0].params / target - 1
        if abs(gap) > 0.02:
            raise SystemExit(f"{m} has {rows[0].params:,} parameters outside the tables, {gap:+.1%} "
                             f"from b0's {target:,}: not matched within 2%")


def report(study: Study, args: argparse.Namespace) -> None:
    lines = ["## Hypersurface study", "",
             f"`python -m studies.hypersurface {' '.join(args.argv)}`".replace(" `", "`"), "",
             f"Sizes: {dataclasses.asdict(args.size)}; cap {args.cap} steps; lrs {args.lrs}; "
             f"seeds {args.seeds}.", ""]
    for d in args.directions:
        if study.stop(d) is None:
            lines += [f"### Trained on {d}: B0's sweep has not finished", ""]
            continue
        finals = report_direction(study, d, lines)
        check_match(finals, args.size)
        report_verdicts(study, d, finals, lines)
        report_separation(study, d, finals, lines)
        report_orthogonality(study, finals, lines)
        if args.figures and finals:
            args.figures.mkdir(parents=True, exist_ok=True)
            for path in plot_direction(study, d, finals, args.figures):
                lines += ["", f"![{path.stem}]({path.name})"]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.report:
        atomic_write(args.report, (text + "\n").encode())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = runner.study_parser(__doc__, "runs/bench_hypersurface",
                            "40 steps, a 512-token BPE, one lr, one seed", outputs=True)
    p.add_argument("--directions", default=None, help="training corpora (default: tinystories,"
                   "shakespeare; --quick and --separate: tinystories)")
    p.add_argument("--models", default=None, help=f"default: {','.join(STUDY)} (--quick: b0,film,"
                   f"input-only; --separate: {','.join(SEPARATE)}); all: {','.join(MODELS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lrs", default="3e-4,1e-3,3e-3", help="the learning rates of every sweep")
    p.add_argument("--widenings", type=int, default=3, help="most half-decade steps past an edge of --lrs")
    p.add_argument("--cap", type=int, default=6000, help="most steps of B0's sweep")
    p.add_argument("--steps", type=int, default=None, help="S given: every run trains S steps, "
                   f"no B0 plateau sweep (--separate: {S_TINYSTORIES}, TinyStories' S on "
                   "studies/results/hypersurface.md; --quick: the quick cap)")
    p.add_argument("--separate", action="store_true", help="the frozen output layer apart from the "
                   "hypernetwork: the --separate models, trained on TinyStories for its S")
    args = runner.parse(p, argv)
    quick, separate = args.quick, args.separate
    if separate and args.directions not in (None, "tinystories") and args.steps is None:
        p.error("--separate's S is TinyStories'; for another direction give its S by --steps")
    default_dirs = "tinystories" if quick or separate else "tinystories,shakespeare"
    args.directions = (args.directions or default_dirs).split(",")
    default_models = SEPARATE if separate else ["b0", "film", "input-only"] if quick else STUDY
    args.models = args.models.split(",") if args.models else default_models
    unknown = [m for m in args.models if m not in MODELS] + [
        d for d in args.directions if d not in ("tinystories", "shakespeare")]
    if unknown:
        p.error(f"unknown model or direction {unknown[0]!r}; models {list(MODELS)}, "
                "directions tinystories, shakespeare")
    if separate and args.steps is None:
        args.steps = S_TINYSTORIES
    if "b0" not in args.models and args.steps is None:
        p.error("the protocol needs b0: its plateau sets every run's length (or give S by --steps)")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.lrs = [float(x) for x in args.lrs.split(",")]
    args.size = Size()
    if quick:
        args.size = Size(vocab=512, val_every=10, window=20, warmup=5)
        args.cap, args.seeds, args.lrs = 40, [0], args.lrs[1:2]
        if args.steps is not None:
            args.steps = args.cap
    return args


def planned_runs(args: argparse.Namespace) -> int:
    """Runs the study makes at least: per direction and model, one per learning rate (seed 0) and
    one per further seed (B0's plateau sweep is its learning rates, like any model's); a widening
    of a grid adds one run each."""
    return len(args.directions) * len(args.models) * (len(args.lrs) + len(args.seeds) - 1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    study = Study(args)
    if args.report_only:
        for path in (args.out / "runs").glob("*.json"):
            data = json.loads(path.read_text())
            data.pop("stamp", None)
            row = row_from_json(data)
            if row.run.saved(args.out) is not None:  # from the configs as they are now
                study.rows[row.run.key] = row
    else:
        print(f"{planned_runs(args)} runs, {args.jobs} jobs, torch threads 1 per run, directions "
              f"{args.directions}", flush=True)
        execute_all(study, args.jobs, args.out)
    report(study, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
