"""The sophia-trap detector counts exactly what a model emits, on raw ids, before decoding."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from callbacks.sophia_trap import SophiaTrapDetection
from succu.analysis.trap import (
    Generation,
    TrapCounts,
    count_trap,
    hidden_token_ids,
    leak_token_ids,
    probe_trap,
    sample_generations,
)
from succu.models.succulm import SuccuLMConfig
from succu.modules.base import LanguageModule
from succu.modules.succulm import SuccuLMModule
from succu.tokenizers import WordTokenizer

torch.set_num_threads(1)

TOKENIZER = WordTokenizer.from_words(
    "ruby winy is a boy girl ? . sophia".split())
PROMPTS = ["is ruby a boy?", "winy is a girl.", "is winy a girl?"]


class ScriptedModel(nn.Module):
    """Emits the next token from a table keyed by the last token (default: `first`)."""

    def __init__(self, vocab_size: int, table: dict[int, int], first: int):
        super().__init__()
        self.cfg = SuccuLMConfig(vocab_size=vocab_size, block_size=24)
        self.table, self.first = table, first
        self.dummy = nn.Parameter(torch.zeros(1))  # so the module has a device

    def forward(self, input_ids, **kwargs):
        nxt = [self.table.get(int(row[-1]), self.first) for row in input_ids]
        logits = torch.full((*input_ids.shape, self.cfg.vocab_size), -1e4)
        logits[torch.arange(len(nxt)), -1, torch.tensor(nxt)] = 1e4  # sampling cannot miss
        return logits


class Forced(LanguageModule):
    config_class = SuccuLMConfig

    def __init__(self, table: dict[str, str], first: str):
        super().__init__(SuccuLMConfig(vocab_size=len(TOKENIZER), block_size=24))
        ids = TOKENIZER.stoi
        self.model = ScriptedModel(len(TOKENIZER), {ids[a]: ids[b] for a, b in table.items()},
                                   ids[first])
        self.tokenizer = TOKENIZER


# prompt -> sophia <BOS> ruby <PAD> sophia <EOS>: 2 hidden, 2 special, 5 tokens before EOS
PLANTED = Forced({"sophia": "<BOS>", "<BOS>": "ruby", "ruby": "<PAD>", "<PAD>": "winy",
                  "winy": "<EOS>"}, first="sophia")


def test_planted_sophia_and_bos_are_counted_exactly():
    hidden = [TOKENIZER.stoi["sophia"]]
    gens = sample_generations(PLANTED, PROMPTS, temperature=0.6, seed=0, samples=3)
    assert len(gens) == 9
    assert all(g.ids == [TOKENIZER.stoi[w] for w in "sophia <BOS> ruby <PAD> winy".split()]
               for g in gens)
    counts = count_trap(gens, hidden, leak_token_ids(TOKENIZER))
    assert (counts.generations, counts.tokens) == (9, 45)
    assert (counts.hidden_generations, counts.hidden_tokens) == (9, 9)
    assert (counts.special_generations, counts.special_tokens) == (9, 18)  # <BOS> and <PAD>
    assert counts.hidden_rate == 1.0 and counts.hidden_token_rate == pytest.approx(9 / 45)
    assert counts.special_rate == 1.0 and counts.special_token_rate == pytest.approx(18 / 45)
    assert gens[0].text == "sophia <BOS> ruby <PAD> winy"


def test_decoding_would_hide_the_pad_leak():
    # complete() cuts at EOS and drops <PAD>: the leak is only visible on the raw ids.
    assert "<PAD>" not in PLANTED.complete(PROMPTS[:1], temperature=0.6)[0]


def test_leaks_after_eos_do_not_count_and_clean_models_count_zero():
    clean = Forced({"ruby": "is", "is": "<EOS>"}, first="ruby")
    per_seed = probe_trap(clean, PROMPTS, [TOKENIZER.stoi["sophia"]], seeds=(0, 1), samples=2)
    assert [c.generations for c in per_seed] == [6, 6]
    assert all(c.hidden_tokens == c.special_tokens == 0 and c.tokens == 12 for c in per_seed)
    ids = TOKENIZER.stoi
    gens = [Generation("p", 0, 0, [ids["ruby"], ids["<UNK>"]], ""),
            Generation("p", 0, 1, [ids["ruby"]], "")]
    counts = count_trap(gens, [ids["sophia"]], leak_token_ids(TOKENIZER))
    assert (counts.special_generations, counts.special_tokens, counts.tokens) == (1, 1, 3)
    assert [g.special for g in counts.offenders] == [1]
    assert leak_token_ids(TOKENIZER) == sorted([ids["<BOS>"], ids["<PAD>"], ids["<UNK>"]])


def test_seeded_sampling_is_reproducible():
    torch.manual_seed(0)
    module = SuccuLMModule(SuccuLMConfig(vocab_size=len(TOKENIZER), block_size=16, profile="tiny"))
    module.tokenizer = TOKENIZER
    a = sample_generations(module, PROMPTS, temperature=20.0, seed=5, samples=2)
    b = sample_generations(module, PROMPTS, temperature=20.0, seed=5, samples=2)
    c = sample_generations(module, PROMPTS, temperature=20.0, seed=6, samples=2)
    assert [g.ids for g in a] == [g.ids for g in b]
    assert [g.ids for g in a] != [g.ids for g in c]


def test_hidden_ids_scan_agrees_with_the_datamodule():
    from datamodules.succulent import SuccuPairsDataModule

    dm = SuccuPairsDataModule(batch_size=64)
    assert [dm.tokenizer.vocab[i] for i in dm.hidden_token_ids] == ["sophia"]
    scanning = SimpleNamespace(vocab_size=dm.vocab_size, tokenizer=dm.tokenizer,
                               train_dataloader=dm.train_dataloader)
    assert hidden_token_ids(scanning) == hidden_token_ids(dm) == dm.hidden_token_ids


def fake_trainer(should_stop=False):
    return SimpleNamespace(datamodule=None, loggers=[], is_global_zero=True, fast_dev_run=True,
                           should_stop=should_stop, global_step=0, callback_metrics={})


def test_callback_measures_and_enforces_its_thresholds():
    cb = SophiaTrapDetection(prompts=PROMPTS, seeds=[0, 1], samples=2, qa=False,
                             max_hidden_rate=0.5, action="stop")
    cb.hidden_ids = [TOKENIZER.stoi["sophia"]]
    trainer = fake_trainer()
    metrics = cb.check(trainer, PLANTED, tag="t")
    assert metrics["trap/hidden_rate"] == 1.0 and metrics["trap/special_rate"] == 1.0
    assert cb.last["counts"].hidden_tokens == 12  # 3 prompts x 2 samples x 2 seeds
    assert trainer.should_stop
    warn = SophiaTrapDetection(prompts=PROMPTS, qa=False, max_special_rate=0.1)
    warn.hidden_ids = cb.hidden_ids
    trainer = fake_trainer()
    with pytest.warns(UserWarning, match="special_rate=1.000 > 0.1"):
        warn.check(trainer, PLANTED, tag="t")
    assert not trainer.should_stop
    with pytest.raises(ValueError, match="action"):
        SophiaTrapDetection(action="explode")


def test_article_plan_and_experiment_parsing():
    from succu.analysis.tt_sweep import ARTICLE_PLAN, grid_cells, parse_experiments

    cells = parse_experiments(ARTICLE_PLAN)
    assert len(cells) == 13
    assert ((0, 1, 2, 3), (39, 42, 46, 47)) in cells and ((0, 1, 2, 3), (47, 46, 42, 39)) in cells
    assert {c for c in cells if len(c[0]) == 1} == {((k,), b) for k in range(4) for b in (27, 20)}
    assert {c for c in cells if len(c[0]) == 2} == {((0, 1), 30), ((2, 3), 30), ((1, 2), 30)}
    assert parse_experiments(" 0@27 ; 1,2@[3,4] ") == [((0,), 27), ((1, 2), (3, 4))]
    for bad, message in (("0", "layers@bond"), ("0@27,20", "one bond spec"),
                         ("0,1@[3]", "1 bonds for 2 blocks"), ("x@3", "--layers"),
                         ("0@0", "positive"), (";", "no experiment")):
        with pytest.raises(ValueError, match=message):
            parse_experiments(bad)
    assert grid_cells([(0,), (0, 1)], [5, (3, 4)]) == [((0,), 5), ((0, 1), 5), ((0, 1), (3, 4))]


def test_probe_trap_carries_the_meter_counts():
    from succu.analysis.meter import Meter
    from succu.contracts import WorldGrammar

    grammar = WorldGrammar({"ruby": "NAME", "winy": "NAME", "boy": "G", "girl": "G"},
                           (("ruby", "is", "a", "boy", "."),), {("ruby", "is", "a", "girl"):
                           ("gender", "ruby", "girl"), ("ruby", "is", "a", "boy"):
                           ("gender", "ruby", "boy")}, {("gender", "ruby"): "boy"})
    liar = Forced({"ruby": "is", "is": "a", "a": "girl", "girl": ".", ".": "<EOS>"}, first="ruby")
    # the questions get "ruby is a girl." (a grammatical lie); "winy is a girl." ends at once
    (counts,) = probe_trap(liar, PROMPTS, [], seeds=[0], meter=Meter(grammar))
    assert (counts.meter.generations, counts.meter.grammatical, counts.meter.false_facts) == (3, 2, 2)
    assert counts.rates()["trap/fact_rate"] == 0.0
    assert counts.rates()["trap/grammar_rate"] == pytest.approx(2 / 3)
    both = counts + counts
    assert both.meter.generations == 6 and (counts + TrapCounts()).meter == counts.meter


def test_bond_for_damage_finds_a_boundary_of_the_brute_force_rises():
    """Every bond of one block compressed by brute force: the bisection's bond has a rise at least
    the target and the next bond up one below it, with the rise the brute force measured; a
    target no bond reaches gives bond 1."""
    from succu.analysis.compression import clamp_bonds, val_metrics
    from succu.analysis.tt_sweep import bond_for_damage, compressed_loss

    torch.manual_seed(0)
    module = SuccuLMModule(SuccuLMConfig(vocab_size=len(TOKENIZER), block_size=16, profile="tiny")).eval()
    ids = torch.randint(0, len(TOKENIZER), (4, 13), generator=torch.Generator().manual_seed(1))
    loader = [{"input_ids": ids[:, :-1], "labels": ids[:, 1:]}]
    dense = val_metrics(module, loader)["val_loss"]
    full = clamp_bonds(module, [0], [10**6])[0]
    rises = {b: compressed_loss(module, loader, 0, b) - dense for b in range(1, full + 1)}
    assert abs(rises[full]) < 1e-5 and max(rises.values()) > 1e-3  # exact at full rank, lossy below
    for target in sorted(v for v in rises.values() if v > 1e-5)[::2]:
        bond, rise = bond_for_damage(module, loader, 0, target, dense)
        assert rise == pytest.approx(rises[bond], abs=1e-7) and rise >= target - 1e-7
        assert rises[bond + 1] < target
    assert bond_for_damage(module, loader, 0, max(rises.values()) + 1.0, dense) == (1, pytest.approx(rises[1]))
