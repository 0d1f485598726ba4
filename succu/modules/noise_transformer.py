"""NoiseTransformerModule: the noise-embedding output side on a transformer encoder in Lightning
(succu/models/noise_transformer.py; the shared losses and decoding are in succu/modules/noise_lm.py).
"""

from __future__ import annotations

from typing import Any

from succu.models.noise_transformer import NoiseTransformerConfig, NoiseTransformerLM
from succu.modules.noise_lm import NoiseModule


class NoiseTransformerModule(NoiseModule):
    """Codes, scattershot context, K noise embeddings under an HMM and the distance snap on top of
    a GPT encoder (not the write-up's model: that is NoiseLMModule). Greedy decoding takes the
    argmax of the mixture.

    Args:
        model: the network (NoiseTransformerConfig: encoder, codes, hierarchy, noise states).
    """

    config_class = NoiseTransformerConfig
    network_class = NoiseTransformerLM

    def __init__(
        self,
        model: NoiseTransformerConfig = NoiseTransformerConfig(),  # noqa: B008
        **kwargs: Any,
    ):
        super().__init__(model, **kwargs)
