"""AlphaBetaSampling: the abcGPT training dial, alpha ~ Beta(a, b) and corpus ~ Bernoulli(alpha);
over K > 2 corpora, alpha ~ Dirichlet(concentration) on the simplex and corpus ~ Categorical(alpha).

This callback is where a user configures the draws; it does not draw them. At setup it installs a
`succu.dial` sampler into the datamodule, whose training pipeline then draws, for every
row, alpha and the corpus and cuts that row from the drawn corpus; each batch carries `alpha` and
`source`, which the gated module reads like any other input. Because a Shakespeare row (corpus 1)
tends to come with a high alpha and a TinyStories row (corpus 0) with a low one, units specialised
at m ~ 1 learn Shakespeare and units at m ~ 0 learn TinyStories.

The draws for batch k on rank r come from a generator seeded by (seed, r, k) in the datamodule, so
DDP ranks draw different dials, DataLoader workers can make batches, and a resumed run continues
the same draws from the batch index alone: the callback keeps no state. The number of corpora
comes from the datamodule at setup: two keep the Beta draws above, bit for bit; more get
`succu.dial.DirichletDialSampler`, drawn from the same per-batch generator (`succu.dial.sampler_for`
is the rule).
"""

from __future__ import annotations

import lightning as L

from succu import dial
from succu.contracts import DialModel, NamedCorpora, require
from succu.loggers import logged_step
from succu.modules.base import LanguageModule


class AlphaBetaSampling(L.Callback):
    """Configure the dial's training draws: alpha ~ Beta(a, b), corpus ~ Bernoulli(alpha); over
    K > 2 corpora alpha ~ Dirichlet(concentration), corpus ~ Categorical(alpha).

    Args:
        a: first Beta parameter of alpha's distribution (two corpora: the corpus-1 side).
        b: second Beta parameter of alpha's distribution.
        distribution: "beta" (Beta(a, b), or Dirichlet(concentration) over K corpora) or
            "uniform" (U(0, 1), or uniform on the simplex: Dirichlet(1, ..., 1)).
        per_sample: every row of the batch gets its own alpha and corpus (else one per batch).
        concentration: Dirichlet concentration over K > 2 corpora: one number (symmetric) or one
            per corpus. Default: `a`, when a == b (the symmetric Beta's generalisation).
    """

    def __init__(
        self, a: float = 0.5, b: float = 0.5, distribution: str = "beta", per_sample: bool = False,
        concentration: float | list[float] | None = None,
    ):
        self.sampler = dial.DialSampler(a=a, b=b, distribution=distribution, per_sample=per_sample)
        dial.check_concentration(concentration)
        self.concentration = concentration

    def sampler_for(self, k: int) -> dial.DialSampler:
        """The draws for a dial over k corpora: the Beta sampler for two, Dirichlet beyond."""
        return dial.sampler_for(k, self.sampler, self.concentration)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = require(trainer.datamodule, NamedCorpora, "AlphaBetaSampling")
        k = len(data.corpora)
        model = pl_module.model if isinstance(pl_module, LanguageModule) else None
        if isinstance(model, DialModel) and model.n_sources != k:
            raise ValueError(f"the model's dial spans n_sources={model.n_sources} but the data has "
                             f"{k} corpora ({', '.join(data.corpora)}): set --model.init_args.model.n_sources "
                             f"{k} (and eval_alphas for {k} sources, where the config lists them)")
        data.install_dial(self.sampler_for(k))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        # What the pipeline drew, for the dashboard, on the steps the loggers write; the batch
        # itself is left as it is.
        if not logged_step(trainer):
            return
        alpha, source = batch["alpha"], batch["source"]
        n = source.numel()
        if alpha.dim() == 1:  # two corpora: alpha is the corpus-1 share
            pl_module.log("train/alpha", alpha.float().mean(), batch_size=n)
            pl_module.log("train/corpus1_share", (source == 1).float().mean(), batch_size=n)
            return
        for k in range(alpha.size(-1)):
            pl_module.log(f"train/alpha{k}", alpha[:, k].float().mean(), batch_size=n)
            pl_module.log(f"train/corpus{k}_share", (source == k).float().mean(), batch_size=n)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if isinstance(data, NamedCorpora):
            data.install_dial(None)

