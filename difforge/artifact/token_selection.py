"""Per-step token selection (RAS, region-adaptive sampling): which image tokens a step
recomputes, chosen by the runtime from what the previous step changed.

What the authors' scheduler (microsoft/RAS, ``RASFluxFlowMatchEulerDiscreteScheduler.
ras_selection``) computes after the sampler's step when the next step is a RAS step, per image:
Δ, the change the step made to the latents; per latent pixel the std over channels of Δ
(``torch.std``, unbiased) or its L2 norm; its mean over each ``patch`` x ``patch`` token,
row-major; times ``exp(starvation * drop_count)``, a per-token counter that starts at
``-(steps + 1)`` and grows by one each time the token is cached. ``skip = int((1 - ratio) *
tokens)`` tokens are cached: sorted by score, the lowest ``int(skip * (1 - high_ratio))`` and
the highest ``int(skip * high_ratio)`` (with the default ``high_ratio`` 1: the highest-scoring
ones, as the authors' code and README do). The others are the step's active tokens, which the
graph gathers (they are handed to it in ascending order; attention does not depend on it).

The rule is the authors' for their flow-matching Euler sampler, where Δ is the step's
(σ_{i+1} - σ_i)·v: ``samplers`` names the runtime samplers it is defined for, and a run with
another is refused rather than scored on a change that means something else. Scores are ranked
in log space (log score + starvation·count): the same order as the authors' product, without
its underflow to 0 for long runs with a large starvation scale.

As written, the starvation factor raises the score of a token each time it is cached, and the
highest scores are the ones cached, so the cached set tends to stay the same from one step to
the next; difforge keeps the authors' rule. They write the highest ``high_bar`` as
``indices[-high_bar:]``, which is every token when ``high_bar`` is 0; here it is none.

This module is numpy only: the runtime imports it, and a PyTorch run of the patch uses the
same rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from difforge.artifact.fields import Fields
from difforge.errors import DifforgeError

METRICS = ("std", "l2norm")


@dataclass(frozen=True)
class TokenSelection:
    """The plan's token selection: graph input ``input`` of variant ``variant`` gets, per
    image row, the indices of the tokens the step recomputes."""

    input: str
    variant: str
    patch: int
    ratio: float
    starvation: float = 0.1
    high_ratio: float = 1.0
    metric: str = "std"
    #: the runtime samplers the rule is defined for
    samplers: tuple[str, ...] = ("flow-euler",)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "variant": self.variant,
            "patch": self.patch,
            "ratio": self.ratio,
            "starvation": self.starvation,
            "high_ratio": self.high_ratio,
            "metric": self.metric,
            "samplers": list(self.samplers),
        }

    @classmethod
    def read(cls, f: Fields) -> TokenSelection:
        if not f.number("ratio") > 0:
            raise f.fail("ratio", "expected a share of tokens above 0")
        return cls(
            input=f.text("input"),
            variant=f.text("variant"),
            patch=f.integer("patch", minimum=1, maximum=64),
            ratio=f.number("ratio", minimum=0.0, maximum=1.0),
            starvation=f.number("starvation", 0.1, minimum=0.0, maximum=10.0),
            high_ratio=f.number("high_ratio", 1.0, minimum=0.0, maximum=1.0),
            metric=f.text("metric", "std", choices=METRICS),
            samplers=_names(f),
        )

    def check_sampler(self, name: str) -> None:
        if name not in self.samplers:
            raise DifforgeError(
                f"this artifact chooses tokens by the authors' RAS rule, defined for the "
                f"{', '.join(self.samplers)} sampler (its change is (σ_next - σ)·v); it cannot "
                f"sample with {name}"
            )

    def skip(self, tokens: int) -> int:
        """How many of ``tokens`` a RAS step caches (the authors' ``skip_token_num``)."""
        return int((1.0 - self.ratio) * tokens)

    def tokens(self, shape: tuple[int, ...]) -> int:
        """How many tokens latents of ``shape`` [B, C, H, W] hold."""
        return (shape[-2] // self.patch) * (shape[-1] // self.patch)

    def active_count(self, tokens: int) -> int:
        return tokens - self.skip(tokens)

    def scores(self, delta: np.ndarray) -> np.ndarray:
        """Per image, per token (row-major) score of ``delta`` [B, C, H, W]."""
        b, c, h, w = delta.shape
        p = self.patch
        if h % p or w % p:
            raise DifforgeError(
                f"manifest.json: step_plan.selection: latents {h}x{w} are not a multiple of its "
                f"{p}x{p} tokens"
            )
        d = delta.astype(np.float64)
        if self.metric == "std":
            if c < 2:
                raise DifforgeError(
                    "manifest.json: step_plan.selection: metric std scores the std over the "
                    "latent's channels, and this latent has 1 (compile with metric=l2norm)"
                )
            pixel = d.std(axis=1, ddof=1)
        else:
            pixel = np.sqrt((d * d).sum(axis=1))
        return pixel.reshape(b, h // p, p, w // p, p).mean(axis=(2, 4)).reshape(b, -1)

    def select(self, delta: np.ndarray, drops: np.ndarray) -> np.ndarray:
        """The active tokens [B, n] (ascending) for the next step; ``drops`` [B, tokens]
        (float, the starvation counters) gain one where a token is cached."""
        with np.errstate(divide="ignore"):
            scores = np.log(self.scores(delta)) + self.starvation * drops
        tokens = scores.shape[1]
        skip = self.skip(tokens)
        low = int(skip * (1.0 - self.high_ratio))
        high = int(skip * self.high_ratio)
        order = np.argsort(scores, axis=1, kind="stable")
        active = np.sort(order[:, low : tokens - high], axis=1)
        cached = np.concatenate([order[:, :low], order[:, tokens - high :]], axis=1)
        np.add.at(drops, (np.arange(len(drops))[:, None], cached), 1.0)
        return active.astype(np.int64)

    def first_drops(self, images: int, tokens: int, num_steps: int) -> np.ndarray:
        """The counters at step 0: ``-(steps + 1)``, the authors' ``-len(sigmas)``."""
        return np.full((images, tokens), -float(num_steps + 1))


def _names(f: Fields) -> tuple[str, ...]:
    names = f.items("samplers", ["flow-euler"])
    if not names or not all(isinstance(n, str) for n in names):
        raise f.fail("samplers", "expected a non-empty list of sampler names")
    return tuple(names)
