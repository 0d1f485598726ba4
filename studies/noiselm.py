"""The NoiseLM study: the write-up's encoder-free model against an n-gram and a matched GPT.

    python -m studies.noiselm [--jobs 2] [--steps 3000] [--seeds 0 1 2] [--datasets succulent,tinystories]
                              [--ablations all] [--ts_ablations core]
    python -m studies.noiselm --quick          # smoke test: a few steps of everything, one seed

Every model is trained by the product, `succu.fit.main` (what `python -m succu.fit` runs), from a
shipped config plus command-line overrides (steps, learning rate, seed, the variant's fields), and
scored by the same Trainer's `validate` and `test`:
- NoiseLM: configs/noiselm_writeup_{succulent,tinystories}.yaml (succu/models/noise_lm.py);
- GPT: configs/noiselm_gpt_{succulent,tinystories}.yaml, nanoGPT with NoiseLM's parameter count
  (the parameters that shape p(y | x); the stop head, trained on detached inputs, is left out);
  this script checks the match is within 5% and stops otherwise;
- n-gram: configs/ngram_{succulent,tinystories}.yaml, interpolated Kneser-Ney of order 8 (the last
  7 tokens: NoiseLM's scattershot window), counted from the same training batches.
Protocol: the learning rate of NoiseLM and of the GPT is chosen by validation loss at seed 0 from
one shared grid (`GRID`), widened half a decade at a time past whichever edge holds a model's lowest
loss until the lowest sits inside (`studies.runner.widened_grid`: a rate at the edge of its grid
says only that the grid was too narrow); every row is then run at seeds 0, 1, 2 and reported on the
test split (TinyStories: the 5% test split of the stories; succulent: the normal pairs left out of
the world plus the held-out QA, `heldout_qa_split: test`, so no QA number was looked at when
choosing). Succulent's test loss is also reported in its two parts, narrative pairs and held-out
QA: they ask different things of a model (continuing a story, recalling a fact). Each of
NoiseLM's mechanisms is ablated one at a time from the full model at its chosen learning rate
(by default the six that remove a part, `CORE`, for the CPU budget; `--ablations all` adds the
alternatives: C as a noise embedding, abs(w-x)/2, the hard choice of Lm, no all-pairs, no
std/variance). A rerun with the same `--out` reuses every finished run.
Tables give mean +- sd over seeds; a difference is called "helps"/"hurts" only when it exceeds two
standard deviations of the difference (2 sqrt(sd_a^2 + sd_b^2)), else "no difference detected".
Exact match pools the three seeds' answers, with a Wilson 95% interval. Runs go to `--jobs`
processes with one torch thread each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from studies import runner
from studies.runner import StudyRun, offline, saved_run, setup_threads

offline()

import torch  # noqa: E402

from succu import fit  # noqa: E402
from succu.analysis.qa import qa_exact_match  # noqa: E402
from succu.checkpoint import load_module  # noqa: E402
from succu.modules.base import IGNORE_INDEX  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODEL_CONFIGS = {
    "succulent": {"NoiseLM": "noiselm_writeup_succulent.yaml", "GPT": "noiselm_gpt_succulent.yaml",
                  "n-gram": "ngram_succulent.yaml"},
    "tinystories": {"NoiseLM": "noiselm_writeup_tinystories.yaml",
                    "GPT": "noiselm_gpt_tinystories.yaml", "n-gram": "ngram_tinystories.yaml"},
}
GRID = [1e-3, 3e-3, 1e-2, 3e-2]  # both models' learning rates, widened per model at an edge
WIDENINGS = 4  # at most this many half-decade steps past the grid's edges
ABLATIONS: dict[str, dict] = {  # one mechanism off (or swapped) at a time, from the full model
    "- token noise": {"token_noise": False},
    "- node (K=1; no C)": {"n_noise": 1, "node_c": "off"},
    "- C": {"node_c": "off"},
    "- B": {"node_b": False},
    "C as noise emb.": {"node_c": "noise"},
    "- levels": {"n_levels": 0},
    "- scattershot": {"n_scatter": 0},
    "- all pairs": {"all_pairs": 0},
    "- std/var": {"scatter_stats": False},
    "abs(w-x)/2": {"pair_op": "absdiff"},
    "hard Lm": {"level": None},  # filled with the full model's argmax beta at seed 0
}
CORE = ["- token noise", "- node (K=1; no C)", "- C", "- B", "- levels", "- scattershot"]  # removals
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]


@dataclass(frozen=True)
class Run(StudyRun):
    dataset: str
    model: str  # NoiseLM, GPT, n-gram
    seed: int
    steps: int
    lr: float | None = None
    variant: str = "full"
    fields: tuple = ()  # (name, value) overrides of the model config
    keep: bool = False  # keep the checkpoint (for the stop-rule study after the sweep)
    cache_dir: str | None = None

    def configs(self) -> list[Path]:
        return [CONFIGS / MODEL_CONFIGS[self.dataset][self.model]]


@dataclass
class Row:
    run: Run
    val: float
    test: float
    params: int
    lm_params: int
    seconds: float
    em: dict = field(default_factory=dict)  # {"train": (hits, n), "held-out": (hits, n)}
    parts: dict = field(default_factory=dict)  # succulent: test loss of {"narrative", "QA"}
    extra: dict = field(default_factory=dict)


# ---- one run, in a worker process -----------------------------------------------------------
def argv(run: Run) -> list[str]:
    config = CONFIGS / MODEL_CONFIGS[run.dataset][run.model]
    out = ["--config", str(config), "--trainer.max_steps", str(run.steps),
           "--trainer.val_check_interval", str(run.steps), "--seed_everything", str(run.seed)]
    if run.lr is not None:
        out += ["--model.init_args.optimizer.init_args.lr", str(run.lr)]
    out += ["--model.init_args.warmup_steps", str(min(100, run.steps // 5))]
    for name, value in run.fields:
        out += [f"--model.init_args.model.{name}", "null" if value is None else str(value).lower()]
    if run.dataset == "succulent":
        out += ["--data.init_args.heldout_qa_split", "test"]
    else:  # TinyStories: the seed also draws the training windows
        out += ["--data.init_args.windows.seed", str(run.seed)]
        if run.cache_dir:
            out += ["--data.init_args.tokens.cache_dir", run.cache_dir]
    return out + QUIET


def execute(run: Run, out: Path) -> Row:
    """Train and score one run, or read its row back when an earlier study made it."""
    return saved_run(run, out, partial(train_and_score, out=out), row_from_json)


def row_from_json(data: dict) -> Row:
    run = data.pop("run")
    run["fields"] = tuple(tuple(f) for f in run["fields"])
    data["em"] = {k: tuple(v) for k, v in data["em"].items()}
    return Row(Run(**run), **data)


def train_and_score(run: Run, out: Path) -> Row:
    runner.quiet_worker()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        cli = fit.main([*argv(run), "--trainer.default_root_dir", tmp])
        seconds = time.perf_counter() - start
        module, dm, trainer = cli.model, cli.datamodule, cli.trainer
        val = float(trainer.callback_metrics["val/loss"])
        test = float(trainer.test(module, datamodule=dm, verbose=False)[0]["test/loss"])
        parts = test_parts(trainer, module, dm) if run.dataset == "succulent" else {}
        if run.keep:
            (out / "ckpts").mkdir(parents=True, exist_ok=True)
            kept = trainer.checkpoint_callback.best_model_path  # last.ckpt: the first ModelCheckpoint
            shutil.copy(kept, out / "ckpts" / f"{run.key}.ckpt")
    module.eval()
    params = sum(p.numel() for p in module.parameters())
    # NoiseLM's stop head reads detached inputs and never shapes p(y | x): not an LM parameter.
    # The n-gram has no weights; its size is the number of n-gram counts it stores.
    head = module.model.stop_head.parameters() if run.model == "NoiseLM" else []
    lm_params = params - sum(p.numel() for p in head)
    if run.model == "n-gram":
        lm_params = module.model.num_params()
    row = Row(run, val, test, params, lm_params, seconds, parts=parts)
    if run.dataset == "succulent":
        for name, pairs in (("train", dm.train_qa), ("held-out", dm.heldout_qa)):
            result = qa_exact_match(module, pairs)
            row.em[name] = (round(result.exact_match * len(pairs)), len(pairs))
    if run.model == "NoiseLM":
        row.extra.update(node_usage(module, dm.test_dataloader()))
    return row


def test_parts(trainer, module, dm) -> dict:
    """Succulent's test loss on each part of its split, by the same Trainer's `test`."""
    parts = {"narrative": dm.test_normal, "QA": dm.heldout_qa}
    return {name: float(trainer.test(module, dataloaders=dm.loader(pairs), verbose=False)[0]["test/loss"])
            for name, pairs in parts.items()}


def stop_job(path: str) -> dict:
    """The stop-rule study on a kept succulent checkpoint (its data rebuilt as the study's)."""
    from datamodules.succulent import SuccuPairsDataModule

    torch.set_num_threads(1)
    module = load_module(path).eval()
    return stop_study(module, SuccuPairsDataModule(seed=42, heldout_qa_split="test"))


@torch.no_grad()
def node_usage(module, loader) -> dict:
    """How the full model uses its parts, on test tokens: the node's states (mean max_k pi_t,
    distances between the state noise embeddings, the loss change when the states' embeddings are
    rolled by one), the hard snap against the relaxed argmax, the digit table against the exact
    snap, the layer Lm kept, and the prior of the B path."""
    net = module.model
    nll = hard = soft = digit = top = total = 0.0
    rolled_nll = 0.0
    for batch in loader:
        ids, labels = batch["input_ids"], batch["labels"]
        mask = labels != IGNORE_INDEX
        y = labels.clamp(min=0)
        out = net.outputs(ids)
        nll += float(-(out.log_probs.gather(-1, y[..., None]).squeeze(-1) * mask).sum())
        pi = out.log_pi.exp()
        top += float((pi.max(-1).values * mask).sum())
        best = out.log_pi.argmax(-1)
        mu = out.mu.gather(2, best[..., None, None].expand(-1, -1, 1, out.mu.size(-1))).squeeze(2)
        exact = net.snap(mu)
        hard += float(((exact == y) & mask).sum())
        digit += float(((net.snap(mu, "digit_hash") == exact) & mask).sum())
        soft += float(((out.log_probs.argmax(-1) == y) & mask).sum())
        total += float(mask.sum())
        saved = net.noise.data.clone()
        net.noise.data.copy_(saved.roll(1, dims=0))
        rolled = net.outputs(ids).log_probs
        net.noise.data.copy_(saved)
        rolled_nll += float(-(rolled.gather(-1, y[..., None]).squeeze(-1) * mask).sum())
    K = net.cfg.n_noise
    dist = torch.cdist(net.noise, net.noise)
    pair = float(dist.sum() / (K * (K - 1))) if K > 1 else 0.0
    codes = torch.cdist(net.codes[:64], net.codes[:64])
    omega = float(torch.sigmoid(net.path_logit)) if net.path_logit is not None else float("nan")
    return {
        "max_pi": top / total, "state_dist": pair, "code_dist": float(codes.sum() / (64 * 63)),
        "rolled_delta": (rolled_nll - nll) / total, "hard_acc": hard / total,
        "soft_acc": soft / total, "digit_agree": digit / total, "level": net.best_level(),
        "level_weight": float(net.level_logits.softmax(0).max()), "omega": omega,
    }


def stop_study(module, dm) -> dict:
    """The statistics stop rule on the held-out QA, tolerance calibrated on the training QA."""
    tok = dm.tokenizer
    module.calibrate_stop(dm.train_qa)
    pairs = dm.heldout_qa
    truth = [tok.encode(a) for _, a in pairs]
    rules = [("EOS", dict(rule="eos")), ("key, greedy", dict(rule="key", beams=1)),
             ("key, beam 4", dict(rule="key", beams=4)),
             ("key, minimax b3", dict(rule="key", beams=3, search="minimax", budget=60)),
             ("key, alpha-beta b3", dict(rule="key", beams=3, search="alphabeta", budget=60))]
    out = {"tol": module.stop_tol}
    for label, kw in rules:
        start = time.perf_counter()
        got = module.answer_ids([q for q, _ in pairs], **kw)
        secs = time.perf_counter() - start
        out[label] = {
            "len_err": sum(abs(len(g) - len(t)) for g, t in zip(got, truth)) / len(pairs),
            "exact_stop": sum(len(g) == len(t) for g, t in zip(got, truth)) / len(pairs),
            "em": sum(g == t for g, t in zip(got, truth)) / len(pairs), "seconds": secs,
        }
        if kw.get("search") in ("minimax", "alphabeta"):  # expansions per question
            ids = [module.prompt_ids(q) for q, _ in pairs[:10]]
            out[label]["expansions"] = statistics.mean(
                module.key_search(i, module.model.cfg.block_size - len(i), 3, kw["search"], 60)[1]
                for i in ids
            )
    return out


# ---- the study ------------------------------------------------------------------------------
def pool_map(runs: list[Run], jobs: int, out: Path) -> list[Row]:
    """Every run in its own process slot (one torch thread each); rows in the order of `runs`."""
    return runner.pool_map(partial(execute, out=out), runs, jobs, progress)


def progress(row: Row) -> None:
    r = row.run
    lr = f"{r.lr:g}" if r.lr is not None else "-"
    print(f"  [{r.dataset} {r.model} {r.variant} lr {lr} seed {r.seed}] val {row.val:.4f} "
          f"test {row.test:.4f} ({row.seconds:.0f} s)", flush=True)


def sweep(args) -> tuple[dict, list[Row]]:
    """Seed 0 on the shared grid, widened at an edge per (dataset, model); returns
    {(dataset, model): lr} and the sweep's rows."""
    rows: list[Row] = []

    def losses(pending: list[tuple[tuple[str, str], float]]) -> list[float]:
        runs = [Run(d, m, args.seeds[0], args.steps, lr, cache_dir=args.cache_dir,
                    keep=d == "succulent" and m == "NoiseLM") for (d, m), lr in pending]
        done = pool_map(runs, args.jobs, args.out)
        rows.extend(done)
        return [r.val for r in done]

    keys = [(d, m) for d in args.datasets for m in ("NoiseLM", "GPT")]
    tried = runner.widened_grid(keys, args.grid, losses, args.widenings)
    return {key: min(t, key=t.get) for key, t in tried.items()}, rows


def study_runs(args, chosen: dict, levels: dict) -> list[Run]:
    runs = []
    for d in args.datasets:
        for seed in args.seeds:
            runs.append(Run(d, "n-gram", seed, args.steps, cache_dir=args.cache_dir))
            for m in ("NoiseLM", "GPT"):
                if seed != args.seeds[0]:  # seed 0 at the chosen lr is the sweep's run
                    runs.append(Run(d, m, seed, args.steps, chosen[(d, m)],
                                    cache_dir=args.cache_dir))
            for name in args.ablations[d]:
                fields = dict(ABLATIONS[name])
                if name == "hard Lm":
                    fields["level"] = levels[d]
                runs.append(Run(d, "NoiseLM", seed, args.steps, chosen[(d, "NoiseLM")], name,
                                tuple(fields.items()), cache_dir=args.cache_dir))
    return runs


# ---- tables ---------------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95% interval of a binomial proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def em_cell(rows: list[Row], name: str) -> str:
    hits = sum(r.em[name][0] for r in rows)
    n = sum(r.em[name][1] for r in rows)
    lo, hi = wilson(hits, n)
    return f"{hits / n:.1%} [{max(lo, 0.0):.1%}, {min(hi, 1.0):.1%}]"


def verdict(delta: float, sd_a: float, sd_b: float) -> str:
    """delta = loss without the mechanism - with it."""
    if sd_a == 0.0 and sd_b == 0.0:
        return "one seed: no verdict"
    bar = 2 * math.hypot(sd_a, sd_b)
    if delta > bar:
        return "helps"
    if delta < -bar:
        return "hurts"
    return "no difference detected at this scale"


def select(rows: list[Row], dataset: str, model: str, variant: str = "full",
           lr: float | None = None) -> list[Row]:
    return [r for r in rows if r.run.dataset == dataset and r.run.model == model
            and r.run.variant == variant and (lr is None or r.run.lr == lr)]


def report_sweep(sweep_rows: list[Row], chosen: dict) -> None:
    print("\n### Learning rate (seed 0, validation loss; the lowest is kept, the grid widened "
          "past an edge that held it)\n")
    print("| data | model | validation loss at each learning rate tried | chosen | at an edge |")
    print("|---|---|---|---|---|")
    for (d, m), lr in chosen.items():
        tried = {r.run.lr: r.val for r in sweep_rows if r.run.dataset == d and r.run.model == m}
        cells = ", ".join(f"{v:g}: {tried[v]:.4f}" for v in sorted(tried))
        edge = "yes (widening limit reached)" if runner.at_edge(tried) else "no"
        print(f"| {d} | {m} | {cells} | {lr:g} | {edge} |")


def report_landing(rows: list[Row], dataset: str, chosen: dict) -> None:
    print(f"\n### {dataset}: where the write-up's model lands (test loss, nats/token)\n")
    qa = dataset == "succulent"
    head = "| model | LM params (n-gram: counts) | lr | val | test |" + (" train EM | held-out EM |" if qa else "")
    print(head + " s/run |")
    print("|---" * (head.count("|") - 1 + 1) + "|")
    stats = {}
    for model in ("n-gram", "NoiseLM", "GPT"):
        mine = select(rows, dataset, model, lr=chosen.get((dataset, model)))
        if not mine:
            continue
        val, test = mean_sd([r.val for r in mine]), mean_sd([r.test for r in mine])
        stats[model] = test
        lr = chosen.get((dataset, model))
        cells = [model, f"{mine[0].lm_params:,}", f"{lr:g}" if lr else "-",
                 f"{val[0]:.4f} ± {val[1]:.4f}", f"{test[0]:.4f} ± {test[1]:.4f}"]
        if qa:
            cells += [em_cell(mine, "train"), em_cell(mine, "held-out")]
        cells.append(f"{statistics.mean(r.seconds for r in mine):.0f}")
        print("| " + " | ".join(cells) + " |")
    if len(stats) == 3:
        order = " < ".join(sorted(stats, key=lambda m: stats[m][0]))
        parts = [f"NoiseLM - {other} {stats['NoiseLM'][0] - stats[other][0]:+.4f} "
                 f"({compare(stats['NoiseLM'], stats[other])})" for other in ("n-gram", "GPT")]
        print(f"\nTest loss, lowest first: {order}. " + "; ".join(parts) + ".")
    if qa:
        report_parts(rows, dataset, chosen)


def report_parts(rows: list[Row], dataset: str, chosen: dict) -> None:
    """The test loss of each part of the split (narrative pairs, held-out QA), NoiseLM against each
    baseline: a model can win one part and lose the other, which the pooled loss hides."""
    found = {m: select(rows, dataset, m, lr=chosen.get((dataset, m))) for m in ("n-gram", "NoiseLM", "GPT")}
    found = {m: mine for m, mine in found.items() if mine and mine[0].parts}
    if "NoiseLM" not in found:
        return
    print(f"\n### {dataset}: the test split in its two parts (test loss, nats/token)\n")
    print("| part | " + " | ".join(found) + " | NoiseLM - n-gram | NoiseLM - GPT |\n|---|" + "---|" * (len(found) + 2))
    for part in found["NoiseLM"][0].parts:
        stats = {m: mean_sd([r.parts[part] for r in mine]) for m, mine in found.items()}
        cells = [f"{a:.4f} ± {b:.4f}" for a, b in stats.values()]
        for other in ("n-gram", "GPT"):
            if other not in stats:
                cells.append("-")
                continue
            delta = stats["NoiseLM"][0] - stats[other][0]
            cells.append(f"{delta:+.4f} ({compare(stats['NoiseLM'], stats[other])})")
        print(f"| {part} | " + " | ".join(cells) + " |")


def compare(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Whether mean +- sd `a` is lower or higher than `b` by more than two sd of the difference."""
    delta, bar = a[0] - b[0], 2 * math.hypot(a[1], b[1])
    if abs(delta) <= bar:
        return "no difference detected"
    return ("lower" if delta < 0 else "higher") + f" beyond 2 sd = {bar:.4f}"


def effect(variant: tuple[float, float], full: tuple[float, float], swapped: bool) -> str:
    """The verdict on a mechanism from mean ± sd losses without it and with it; for a swapped
    alternative (not a removal), which side is better."""
    word = verdict(variant[0] - full[0], variant[1], full[1])
    if swapped:
        word = {"helps": "the full model's choice is better", "hurts": "this variant is better"}.get(word, word)
    return word


def report_ablations(rows: list[Row], dataset: str, names: list[str]) -> None:
    """Each variant's test loss against the full model's, pooled and, where the split has parts
    (succulent: narrative pairs, held-out QA), per part: a mechanism can help one and not the other."""
    full_rows = select(rows, dataset, "NoiseLM")
    full = mean_sd([r.test for r in full_rows])
    parts = [p for p in (full_rows[0].parts if full_rows else {}) if all(p in r.parts for r in full_rows)]
    full_parts = {p: mean_sd([r.parts[p] for r in full_rows]) for p in parts}
    print(f"\n### {dataset}: NoiseLM's mechanisms one at a time (test loss; delta = variant - full)\n")
    print("| variant | test | delta | the mechanism |" + "".join(f" {p}: test, delta |" for p in parts))
    print("|---|---|---|---|" + "---|" * len(parts))
    print(f"| full | {full[0]:.4f} ± {full[1]:.4f} | | |" +
          "".join(f" {m:.4f} ± {sd:.4f} |" for m, sd in full_parts.values()))
    for name in names:
        mine = select(rows, dataset, "NoiseLM", name)
        if not mine:
            continue
        swapped = name in ("C as noise emb.", "abs(w-x)/2", "hard Lm")  # an alternative, not a removal
        m = mean_sd([r.test for r in mine])
        cells = [f"{m[0]:.4f} ± {m[1]:.4f}", f"{m[0] - full[0]:+.4f}", effect(m, full, swapped)]
        for p in parts:
            if not all(p in r.parts for r in mine):  # saved before the split was scored in parts
                cells.append("-")
                continue
            mp = mean_sd([r.parts[p] for r in mine])
            cells.append(f"{mp[0]:.4f} ± {mp[1]:.4f}, {mp[0] - full_parts[p][0]:+.4f}: "
                         f"{effect(mp, full_parts[p], swapped)}")
        fields = ", ".join(f"{k}={v}" for k, v in mine[0].run.fields)
        print(f"| {name} ({fields}) | " + " | ".join(cells) + " |")


def report_usage(rows: list[Row], dataset: str) -> None:
    mine = select(rows, dataset, "NoiseLM")
    keys = ["max_pi", "state_dist", "code_dist", "rolled_delta", "hard_acc", "soft_acc",
            "digit_agree", "level_weight", "omega"]
    print(f"\n### {dataset}: how the full NoiseLM uses its parts (test tokens, mean ± sd)\n")
    print("| " + " | ".join(keys) + " | level kept |\n|" + "---|" * (len(keys) + 1))
    cells = ["{:.3f} ± {:.3f}".format(*mean_sd([r.extra[k] for r in mine])) for k in keys]
    print("| " + " | ".join(cells) + f" | {[r.extra['level'] for r in mine]} |")


def report_stop(row: Row, stop: dict) -> None:
    print(f"\n### succulent: the stop rule on the held-out QA (seed {row.run.seed}, tol "
          f"{stop['tol']:.3g} calibrated on the training QA)\n")
    print("| rule | abs len err | exact stop | EM | expansions/question | s |\n|---|---|---|---|---|---|")
    for label, v in stop.items():
        if label == "tol":
            continue
        exp = f"{v['expansions']:.1f}" if "expansions" in v else "-"
        print(f"| {label} | {v['len_err']:.2f} | {v['exact_stop']:.1%} | {v['em']:.1%} | {exp} | "
              f"{v['seconds']:.1f} |")


def check_match(rows: list[Row], datasets: list[str], quick: bool) -> None:
    for d in datasets:
        noise = select(rows, d, "NoiseLM")[0].lm_params
        gpt = select(rows, d, "GPT")[0].params
        gap = gpt / noise - 1
        print(f"{d}: NoiseLM {noise:,} LM parameters, GPT {gpt:,} ({gap:+.1%})")
        if abs(gap) > 0.05 and not quick:
            raise SystemExit(f"the GPT of {d} is not matched to NoiseLM within 5% ({gap:+.1%}): "
                             f"resize configs/{MODEL_CONFIGS[d]['GPT']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = runner.study_parser(__doc__, "runs/bench_noiselm", "few steps, one seed and lr",
                            out_help=" and the checkpoints the stop-rule study reads",
                            threads=True, report_only=None)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--datasets", default="succulent,tinystories")
    p.add_argument("--ablations", default="core",
                   help="succulent: 'all', 'core', 'none' or a comma list of names")
    p.add_argument("--ts_ablations", default="core", help="TinyStories: the same choices")
    args = runner.parse(p, argv)
    args.datasets = args.datasets.split(",")
    def pick(v: str) -> list[str]:
        names = list(ABLATIONS) if v == "all" else CORE if v == "core" else (
            [] if v == "none" else v.split(","))
        unknown = [n for n in names if n not in ABLATIONS]
        if unknown:
            p.error(f"unknown ablation {unknown[0]!r}; choose from {list(ABLATIONS)}")
        return names

    args.ablations = {"succulent": pick(args.ablations), "tinystories": pick(args.ts_ablations)}
    args.grid, args.widenings = list(GRID), WIDENINGS
    if args.quick:  # two rates and one widening: the sweep's whole path in few runs
        args.steps, args.seeds = 20, [0]
        args.grid, args.widenings = GRID[2:], 1
        args.ablations = {d: ["- C", "hard Lm"] for d in ("succulent", "tinystories")}
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_threads(args.threads)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"{args.steps} steps, seeds {args.seeds}, {args.jobs} jobs, datasets {args.datasets}")
    print("sweep:", flush=True)
    chosen, sweep_rows = sweep(args)
    levels = {d: select(sweep_rows, d, "NoiseLM", lr=chosen[(d, "NoiseLM")])[0].extra["level"]
              for d in args.datasets}
    print("study:", flush=True)
    rows = sweep_rows + pool_map(study_runs(args, chosen, levels), args.jobs, args.out)
    rows = [r for r in rows if r.run.model != "GPT" and r.run.model != "NoiseLM"
            or r.run.variant != "full" or r.run.lr == chosen[(r.run.dataset, r.run.model)]]
    check_match(rows, args.datasets, args.quick)
    report_sweep(sweep_rows, chosen)
    for d in args.datasets:
        report_landing(rows, d, chosen)
        report_ablations(rows, d, args.ablations[d])
        report_usage(rows, d)
    if "succulent" in args.datasets:
        row = select(sweep_rows, "succulent", "NoiseLM", lr=chosen[("succulent", "NoiseLM")])[0]
        report_stop(row, stop_job(str(args.out / "ckpts" / f"{row.run.key}.ckpt")))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
