"""Progress of long work: a bar in a terminal, lines every few seconds in a pipe, quiet when short;
and the long work that shows it (evaluate, the sweeps, the voice meter), with the pipe's interval
shortened so that every item prints a line."""

import io

import pytest
import torch

from succu import evaluate
from succu.analysis import alpha_sweep, voice
from succu.modules.gated_gpt import GatedGPTModule
from succu.progress import progress
from succu.tokenizers import CharTokenizer
from tests.tiny import tiny_module


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_a_line_per_interval_and_one_at_the_end():
    out = io.StringIO()
    assert list(progress(range(3), "scoring", every=0.0, stream=out)) == [0, 1, 2]
    lines = out.getvalue().splitlines()
    assert [line.split(" in ")[0] for line in lines] == ["scoring: 1/3", "scoring: 2/3", "scoring: 3/3",
                                                         "scoring: 3/3"]
    assert lines[-1].endswith(", done")


def test_short_work_in_a_pipe_prints_nothing():
    out = io.StringIO()
    assert list(progress(iter(range(5)), "scoring", stream=out)) == list(range(5))
    assert out.getvalue() == ""


def test_an_iterator_without_length_counts_without_a_total():
    out = io.StringIO()
    list(progress(iter("ab"), "voice", every=0.0, stream=out))
    assert out.getvalue().splitlines()[0].startswith("voice: 1 in ")


def test_a_terminal_gets_a_bar():
    out = Terminal()
    assert list(progress(range(4), "sweep", stream=out)) == [0, 1, 2, 3]
    assert "sweep:" in out.getvalue() and "/4 [" in out.getvalue()  # a tqdm bar, cleared at the end


# ---- the long work that shows progress --------------------------------------------------------------
@pytest.fixture
def every_item(monkeypatch):
    """A line after every item in a pipe (pytest's captured stderr is one), without sleeping."""
    monkeypatch.setitem(progress.__kwdefaults__, "every", 0.0)


def progress_lines(err: str, what: str) -> list[str]:
    return [line.split(" in ")[0] for line in err.splitlines() if line.startswith(f"{what}: ")]


TEXT = "the cat sat on the mat. the dog ran.\n"


@pytest.fixture(scope="module")
def gated():
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts([TEXT])
    module = tiny_module(GatedGPTModule, vocab_size=tok.vocab_size, block_size=8, n_layer=1,
                         n_head=2, n_embd=8)
    module.tokenizer = tok
    return module.eval()


@pytest.mark.parametrize("n_ids, block, stride", [(2, 8, 8), (9, 8, 8), (10, 8, 8), (40, 8, 8),
                                                  (40, 8, 3), (40, 8, 1), (41, 8, 8)])
def test_window_count_is_what_text_batches_cuts(n_ids, block, stride):
    batches = list(evaluate.text_batches(list(range(n_ids)), block, stride, 1, 0))
    assert evaluate.window_count(n_ids, block, stride) == len(batches)


def test_evaluate_text_prints_a_line_per_batch_in_a_pipe(gated, tmp_path, monkeypatch, capsys, every_item):
    ckpt = tmp_path / "gated.ckpt"
    saved = {"state_dict": gated.state_dict(), "hyper_parameters": dict(gated.hparams)}
    gated.on_save_checkpoint(saved)
    torch.save(saved, ckpt)
    text = tmp_path / "text.txt"
    text.write_text(TEXT * 3)
    evaluate.main(["--ckpt", str(ckpt), "--text", str(text), "--batch_size", "4", "--alpha", "0.5"])
    n = -(-evaluate.window_count(len(TEXT) * 3 + 1, 8, 8) // 4)  # <BOS> + one id per character
    lines = progress_lines(capsys.readouterr().err, f"evaluate {text}")
    assert n > 2 and lines == [f"evaluate {text}: {i}/{n}" for i in range(1, n + 1)] + [lines[-1]]


def test_the_alpha_sweep_prints_a_line_per_batch_and_alpha(gated, capsys, every_item):
    ids = torch.tensor([gated.prompt_ids(TEXT)[:9]] * 2)
    batches = [{"input_ids": ids[:, :-1], "labels": ids[:, 1:], "source": torch.tensor([c, c])}
               for c in (0, 1)]
    rows = alpha_sweep.sweep(gated, batches, [0.0, 0.5, 1.0], ["a", "b"])
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert progress_lines(capsys.readouterr().err, "alpha sweep")[-2:] == ["alpha sweep: 6/6"] * 2
    with torch.no_grad():  # the same numbers as one alpha at a time
        assert rows[1]["b"] == pytest.approx(float(gated.loss(gated(batches[1]["input_ids"], alpha=0.5),
                                                              batches[1]["labels"])))


def test_the_voice_meter_prints_a_line_per_generation_step(gated, capsys, every_item):
    meter = voice.VoiceMeter.fit({"a": TEXT * 4, "b": TEXT.upper() * 4})
    rows = voice.voice_shares(gated, meter, [0.0, 1.0], n=4, length=4)
    assert len(rows) == 2
    # Prompts "the ", "and ", "she " share a batch, "a " has its own: 2 batches of 4 steps.
    n = 2 * voice.sampling_steps(gated, 4, length=4)
    what = "voice meter: 2 positions x 4 samples, steps"
    lines = progress_lines(capsys.readouterr().err, what)
    assert n == 2 * 2 * 4 and lines == [f"{what}: {i}/{n}" for i in range(1, n + 1)] + [lines[-1]]
    # Sampled step by step, the texts are generate's.
    texts = voice.continuations(gated, 1.0, 4, length=4, seed=5)
    generator = torch.Generator().manual_seed(5)
    batch = torch.tensor([gated.prompt_ids(p) for p in ("the ", "and ", "she ")])
    first = gated.generate(batch, 4, temperature=0.8, generator=generator, alpha=1.0)
    assert texts[:3] == [gated.tokenizer.decode(row) for row in first[:, batch.size(1):].tolist()]
