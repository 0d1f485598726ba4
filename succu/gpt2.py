"""What a succu model becomes as a Hugging Face GPT-2 (`GPT2LMHeadModel`): its config and weights.

A GPT-2 is nanoGPT's network: learned token and position tables, pre-LN blocks (attention with one
fused qkv projection, an MLP), a final LayerNorm and a head tied to the token table. Three succu
models are exactly that network once their dial, if any, stands still:

    GPT        itself. Every nn.Linear (out, in) becomes a Conv1D weight (in, out); biases and
               LayerNorm shifts a model trains without are zeros; exact GELU is "gelu".
    GatedGPT   at a fixed alpha every gate is a constant per-unit scale: g_e on the residual
               channels, g_h on each head's channels, g_m on the MLP's inner units. Every gated
               site is a Linear's input or output, or the embedding, so the gates fold into weights:
                   wte' = wte diag(g_e), wpe' = wpe diag(g_e)      (the embedding's output gate)
                   W_proj' = diag(g_e) W_proj diag(g_h), b' = g_e b    (heads in, stream out)
                   W_2' = diag(g_e) W_2 diag(g_m), b' = g_e b          (MLP units in, stream out)
               and the head, lm_head(g_e x) = W_te diag(g_e) x = wte' x, is the folded table
               itself, so the tie survives. The weights are those `gated_linear` computes.
    control    the style vector s(alpha) = sum_k alpha_k s_k is added at every position, so it
               folds into the position table: wpe' = wpe + s(alpha). (Not into wte: the head is
               tied to it, and wte + s would add s.x to every logit of a position.)
    SuccuLM    its sinusoidal table becomes wpe (the first block_size rows, the only ones it
               uses), ReLU is "relu", n_inner = ffn_expansion d; a tensor-train FFN layer becomes
               the dense matrix its cores contract to.

Any other model has no GPT-2 form, and `NotGPT2` says why in one line. Writing the folder
(config.json, model.safetensors, the tokenizer) is `succu.export`'s; this module is pure torch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from succu.dial import Position
from succu.models.gated_gpt import GatedGPT
from succu.models.gpt import GPT, INIT_STD
from succu.models.hypersurface import BASELINES, HypersurfaceLM
from succu.models.ngram import KneserNeyLM
from succu.models.noise_lm import NoiseLM
from succu.models.noise_transformer import NoiseTransformerLM
from succu.models.succulm import SuccuLM
from succu.progress import progress

Pair = tuple[torch.Tensor, torch.Tensor]  # (weight, bias) of a Linear (out, in) or a LayerNorm


class NotGPT2(ValueError):
    """A model with no exact GPT-2 form; the message says why, in one line."""


@dataclass
class Block:
    """One pre-LN block in succu's orientation: Linear weights (out, in), biases always present."""

    ln_1: Pair
    qkv: Pair
    proj: Pair
    ln_2: Pair
    fc: Pair
    out: Pair


@dataclass
class Parts:
    """A nanoGPT-shaped network, weights as plain tensors: what every mapping produces."""

    wte: torch.Tensor
    wpe: torch.Tensor
    blocks: list[Block]
    ln_f: Pair
    n_head: int
    activation: str
    layer_norm_epsilon: float
    dropout: float


@dataclass
class GPT2Form:
    """config.json's fields (token ids aside) and the tensors of model.safetensors."""

    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def gpt2_form(model: nn.Module, alpha: Position | None = None) -> GPT2Form:
    """`model` (at dial position `alpha`, for a model with a dial) as a GPT-2; NotGPT2 otherwise.

    Dispatch is on the exact class: a subclass (GatedGPT is a GPT) may compute something its base
    does not, so it is never mapped as its base by accident.
    """
    with torch.no_grad():
        if type(model) is GPT:
            parts = gpt_parts(model)
        elif type(model) is GatedGPT:
            parts = gated_parts(model, alpha)
        elif type(model) is SuccuLM:
            parts = succulm_parts(model)
        else:
            raise NotGPT2(no_gpt2_reason(model))
        return to_gpt2(parts)


def no_gpt2_reason(model: nn.Module) -> str:
    name = type(model).__name__
    if isinstance(model, HypersurfaceLM) and model.cfg.variant in BASELINES:
        why = (f"baseline {model.cfg.variant} has a GPT's shape, but export does not map "
               "HypersurfaceLM's module tree")
    elif isinstance(model, HypersurfaceLM):
        why = ("a hypernetwork transforms the token latents anew at every position, so no fixed "
               "embedding or head gives its logits")
    elif isinstance(model, NoiseTransformerLM):
        why = ("its next token comes from a hidden Markov chain over noise states snapping to "
               "fixed random codes, not from a linear head on the last hidden state")
    elif isinstance(model, NoiseLM):
        why = "it has no transformer: mean hierarchies of noise embeddings snap to random codes"
    elif isinstance(model, KneserNeyLM):
        why = "an n-gram model's probabilities are smoothed ratios of counts, not weights"
    else:
        why = "export maps GPT, GatedGPT and SuccuLM only"
    return f"{name} cannot be written as a GPT-2: {why} (--format succu writes any model)"


# ---- succu models as Parts -----------------------------------------------------------------
def gpt_parts(model: GPT) -> Parts:
    t = model.transformer
    blocks = [
        Block(norm(b.ln_1), linear(b.attn.qkv), linear(b.attn.proj), norm(b.ln_2),
              linear(b.mlp.c_fc), linear(b.mlp.c_proj))
        for b in progress(t.h, "export: layers")
    ]
    return Parts(
        wte=t.wte.weight.clone(), wpe=t.wpe.weight.clone(), blocks=blocks, ln_f=norm(t.ln_f),
        n_head=t.h[0].attn.n_head, activation=activation(t.h[0].mlp.gelu),
        layer_norm_epsilon=epsilon(t.ln_f, *(m for b in t.h for m in (b.ln_1, b.ln_2))),
        dropout=model.cfg.dropout,
    )


def gated_parts(model: GatedGPT, alpha: Position | None) -> Parts:
    """GatedGPT at `alpha`: the plain GPT's parts with the gates (or the style vector) folded in."""
    parts = gpt_parts(model)
    if not model.cfg.gating:  # forward ignores alpha: the network is the plain GPT
        return parts
    if alpha is None:
        raise ValueError(f"{type(model).__name__} has a dial: give the position to export at")
    position = model.dial_position(alpha)
    if model.cfg.dial == "control_code":
        parts.wpe = parts.wpe + model.style_vector(position)
        return parts
    sites = model.dial(position, None)
    g_e = sites["embd"][0][0]
    parts.wte = parts.wte * g_e
    parts.wpe = parts.wpe * g_e
    for block, (g_h, _), (g_m, _) in zip(parts.blocks, sites["head"], sites["mlp"]):
        block.proj = fold(block.proj, g_in=g_h, g_out=g_e)
        block.out = fold(block.out, g_in=g_m, g_out=g_e)
    return parts


def fold(pair: Pair, g_in: torch.Tensor, g_out: torch.Tensor) -> Pair:
    """diag(g_out) W diag(g_in) and g_out b: the products `succu.nn.gates.gated_linear` forms."""
    weight, bias = pair
    return weight * g_out[:, None] * g_in[None, :], bias * g_out


def succulm_parts(model: SuccuLM) -> Parts:
    blocks = [
        Block(norm(b.ln1), linear(b.attn.qkv), linear(b.attn.proj), norm(b.ln2),
              linear(b.ffn[0]), linear(b.ffn[2]))
        for b in progress(model.blocks, "export: layers")
    ]
    return Parts(
        wte=model.embed.weight.clone(), wpe=model.pe.clone(), blocks=blocks, ln_f=norm(model.ln_f),
        n_head=model.blocks[0].attn.n_head, activation=activation(model.blocks[0].ffn[1]),
        layer_norm_epsilon=epsilon(model.ln_f, *(m for b in model.blocks for m in (b.ln1, b.ln2))),
        dropout=model.cfg.dropout,
    )


def linear(layer: nn.Module) -> Pair:
    """(W (out, in), b) of an nn.Linear, or of a TTLinear as the dense matrix its cores make;
    zeros for a bias the layer has none of."""
    tt = sys.modules.get("succu.nn.tt")  # a TTLinear exists only once its module is imported
    if tt is not None and isinstance(layer, tt.TTLinear):
        weight = layer.to_dense()
    elif isinstance(layer, nn.Linear):
        weight = layer.weight
    else:
        raise NotGPT2(f"{type(layer).__name__} is not a linear layer GPT-2 can hold")
    bias = layer.bias if layer.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    return weight.detach().clone(), bias.detach().clone()


def norm(ln: nn.LayerNorm) -> Pair:
    bias = ln.bias if ln.bias is not None else torch.zeros_like(ln.weight)
    return ln.weight.detach().clone(), bias.detach().clone()


def epsilon(*norms: nn.LayerNorm) -> float:
    """GPT-2 has one layer_norm_epsilon for every LayerNorm."""
    eps = {ln.eps for ln in norms}
    if len(eps) != 1:
        raise NotGPT2(f"its LayerNorms use several epsilons {sorted(eps)}; GPT-2 has one")
    return eps.pop()


def activation(act: nn.Module) -> str:
    """The transformers name of the activation that computes exactly the same function."""
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"  # transformers' GELUActivation: torch's exact (erf) GELU
    if isinstance(act, nn.ReLU):
        return "relu"
    raise NotGPT2(f"its MLP activation {act} has no exact GPT-2 name")


# ---- Parts as GPT-2 ------------------------------------------------------------------------
def to_gpt2(parts: Parts) -> GPT2Form:
    """Names and orientation of GPT2LMHeadModel: Conv1D holds (in, out), the transpose of a Linear.

    lm_head.weight is not written: the config ties it to transformer.wte.weight on loading.
    """
    tensors = {"transformer.wte.weight": parts.wte, "transformer.wpe.weight": parts.wpe}
    for i, b in enumerate(parts.blocks):
        p = f"transformer.h.{i}."
        for name, (weight, bias) in (("ln_1", b.ln_1), ("ln_2", b.ln_2)):
            tensors[f"{p}{name}.weight"], tensors[f"{p}{name}.bias"] = weight, bias
        for name, (weight, bias) in (("attn.c_attn", b.qkv), ("attn.c_proj", b.proj),
                                     ("mlp.c_fc", b.fc), ("mlp.c_proj", b.out)):
            tensors[f"{p}{name}.weight"], tensors[f"{p}{name}.bias"] = weight.t(), bias
    tensors["transformer.ln_f.weight"], tensors["transformer.ln_f.bias"] = parts.ln_f
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    n_positions, n_embd = parts.wpe.shape
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": parts.wte.shape[0],
        "n_positions": n_positions,
        "n_embd": n_embd,
        "n_layer": len(parts.blocks),
        "n_head": parts.n_head,
        "n_inner": parts.blocks[0].fc[0].shape[0],  # every succu model has a block
        "activation_function": parts.activation,
        "layer_norm_epsilon": parts.layer_norm_epsilon,
        # succu drops out embeddings, attention weights, attention output and MLP output alike
        "resid_pdrop": parts.dropout, "embd_pdrop": parts.dropout, "attn_pdrop": parts.dropout,
        "initializer_range": INIT_STD,
        "scale_attn_weights": True,  # softmax(q k^T / sqrt(d_head)), as SDPA's default
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "dtype": str(parts.wte.dtype).removeprefix("torch."),
    }
    return GPT2Form(config, tensors)
