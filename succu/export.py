"""`python -m succu.export --ckpt CKPT OUT/`: a checkpoint as a folder that other tools load.

`--format hf` (the default) writes a Hugging Face GPT-2 folder that `transformers` loads with no
code of succu's (`AutoModelForCausalLM.from_pretrained(OUT)`, `AutoTokenizer.from_pretrained(OUT)`):
config.json, model.safetensors, tokenizer.json with the checkpoint's surface rules, the tokenizer's
settings and generation_config.json. GPT, GatedGPT (at the dial position `--alpha`, which a model
with a dial needs), its control-code baseline and SuccuLM have that form (`succu.gpt2`); any other
model is refused in one line saying why.

`--format succu` writes any model as the checkpoint itself without a pickle: model.safetensors
and succu.json (`succu.checkpoint_files.write_folder`); every succu tool takes that folder as --ckpt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from succu.checkpoint_files import (
    CHECKPOINT_KEY,
    read_checkpoint,
    safetensors_torch,
    write_folder,
)
from succu.dial import Position, parse_position, position_for, position_label
from succu.errors import fail, run_cli
from succu.gpt2 import gpt2_form
from succu.inference import InferenceLM, model_from_checkpoint
from succu.io import writable_folder, write_outputs
from succu.tokenizers import Tokenizer

FORMATS = ("hf", "succu")
# The file that marks a folder of each format: writing one format over the other would leave a
# folder neither reads (a stale succu.json names the wrong tensors; config.json the wrong model).
MARKERS = {"hf": "config.json", "succu": "succu.json"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m succu.export", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True, help="a succu checkpoint (.ckpt, or a --format succu folder)")
    p.add_argument("out", metavar="OUT", help="the folder to write (created if missing; files of the "
                                              "same names in it are replaced)")
    p.add_argument("--format", choices=FORMATS, default="hf",
                   help="hf: a transformers GPT-2 folder (default); succu: the whole checkpoint as "
                        "safetensors and JSON, any model")
    p.add_argument("--alpha", default=None,
                   help="--format hf of a gated model (required for one): the dial position whose "
                        "voice the GPT-2 keeps, a number in [0, 1] for two sources or K "
                        "comma-separated shares summing to 1 (e.g. 0.2,0.3,0.5)")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    parser.error = fail  # type: ignore[method-assign]  # one `error:` line, no usage dump
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    return run_cli(lambda: export_main(argv))


def export_main(argv: list[str] | None) -> Path:
    args = parse(argv)
    position = None if args.alpha is None else parse_position(args.alpha)  # before the load
    if args.format == "succu" and position is not None:
        fail("--alpha is for --format hf; --format succu keeps the whole dial")
    for other, marker in MARKERS.items():
        if other != args.format and (Path(args.out) / marker).exists():
            fail(f"OUT {args.out} holds a --format {other} export ({marker}); write --format "
                 f"{args.format} into another folder")
    ckpt = read_checkpoint(args.ckpt)
    module = model_from_checkpoint(ckpt, args.ckpt).eval()
    name = type(module.model).__name__
    if args.format == "succu":
        folder = module.checkpoint()
        folder["datamodule_hyper_parameters"] = ckpt.get("datamodule_hyper_parameters")
        if ckpt[CHECKPOINT_KEY].get("corpora") is not None:  # so the folder's text is checked too
            folder[CHECKPOINT_KEY]["corpora"] = ckpt[CHECKPOINT_KEY]["corpora"]
        write_folder(folder, writable_folder(args.out, "OUT"))
        print(f"succu: wrote {args.out}: {name} as safetensors and succu.json")
        return Path(args.out)
    alpha = export_position(module, position, args.ckpt)
    files = hf_files(module, alpha)  # everything built before OUT is touched
    write_outputs(writable_folder(args.out, "OUT"), files)
    where = "" if alpha is None else f" at alpha={position_label(alpha)}"
    print(f"succu: wrote {args.out}: {name}{where} as a transformers GPT2LMHeadModel")
    return Path(args.out)


def export_position(module: InferenceLM, position: Position | None, ckpt: str) -> Position | None:
    """The dial position to export at: required for a model with a dial, refused for others."""
    name = type(module.model).__name__
    if not module.has_dial:
        if position is not None:
            fail(f"--alpha needs a gated model; {ckpt} holds {name}")
        return None
    k = module.model.n_sources
    if position is None:
        corner = ",".join(["1"] + ["0"] * (k - 1))
        example = "a number in [0, 1], e.g. 0.5" if k == 2 else f"{k} shares summing to 1, e.g. {corner}"
        fail(f"{name} has a dial over {k} sources: --format hf exports one position of it, give "
             f"--alpha ({example})")
    return position_for(position, k)


def hf_files(module: InferenceLM, alpha: Position | None) -> dict[str, bytes | str]:
    """The transformers folder's files, by name."""
    form = gpt2_form(module.model, alpha)
    tok = module.tokenizer
    ids = special_ids(tok)
    block_size = form.config["n_positions"]
    metadata = {"format": "pt", "succu_model": type(module.model).__name__}
    if alpha is not None:
        metadata["succu_alpha"] = position_label(alpha)
    files: dict[str, bytes | str] = {
        "model.safetensors": safetensors_torch().save(form.tensors, metadata=metadata),
        "config.json": as_json({**form.config, **ids}),
        # succu.generate's defaults: sampling from the whole distribution at temperature 1
        "generation_config.json": as_json({**ids, "do_sample": True, "temperature": 1.0, "top_k": 0}),
    }
    if tok is not None:
        files.update(tokenizer_files(tok, block_size))
    else:
        print("note: the checkpoint has no tokenizer; OUT holds the model only", file=sys.stderr)
    return files


def special_ids(tok: Tokenizer | None) -> dict[str, int | None]:
    """bos / eos / pad ids for transformers (pad: <PAD>, else EOS, which generation pads with)."""
    if tok is None:
        return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    return {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": pad}


def tokenizer_files(tok: Tokenizer, block_size: int) -> dict[str, str]:
    """tokenizer.json (the same ids as `tok`; with <BOS> first, as `Decoding.prompt_ids`
    puts it) and the settings transformers reads beside it."""
    from tokenizers import processors

    hf = tok.to_hf()
    if tok.bos_id is not None:
        bos = tok.vocab[tok.bos_id]
        hf.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.bos_id)])
    ids = special_ids(tok)
    specials = {f"{role}_token": tok.vocab[i]
                for role, i in (("bos", ids["bos_token_id"]), ("eos", ids["eos_token_id"]),
                                ("pad", ids["pad_token_id"]), ("unk", tok.unk_id)) if i is not None}
    settings: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,  # the decoder already spaces text as succu does
        # no token_type_ids: GPT-2 would add them to the input as token embeddings
        "model_input_names": ["input_ids", "attention_mask"],
        **specials,
    }
    return {"tokenizer.json": hf.to_str(), "tokenizer_config.json": as_json(settings),
            "special_tokens_map.json": as_json(specials)}


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
