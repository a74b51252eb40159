"""Requests from several clients generated in one pipeline call, each keeping its own seed.

Requests are grouped when everything but their conditioning and seed agree (steps, guidance,
sampler, size, negative prompt) and their images fit one call of the artifact. A group's
initial noise is each request's own draw from its own seed, stacked, so every image starts
from exactly the noise it would start from alone; the samplers that draw noise during the loop
(ancestral, LCM, TCD) are never grouped, as their draws are made once per call, and a step
plan whose tables follow the run's seed groups only requests of one seed. What may still differ
is float rounding: an engine's kernels can sum a batch of N in another order than a batch of 1
(the tests bound it: equal bytes on the digits models, within 1/255 on tiny-sd).

The runtime's pipeline is not reentrant: a server hands it one group at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from difforge.artifact.step_plan import RUN_SEED
from difforge.runtime import GenerateRequest, GenerateResult, Pipeline
from difforge.runtime.request import ResolvedRequest


@dataclass(frozen=True)
class Job:
    """One request, resolved against the artifact."""

    request: GenerateRequest
    resolved: ResolvedRequest
    #: requests with equal keys may share a call
    key: Hashable


def job(pipe: Pipeline, request: GenerateRequest) -> Job:
    """``request`` resolved (the runtime's refusals raised here, before any queueing) with
    the key of the requests it may share a call with."""
    resolved = pipe.resolve(request)
    if resolved.sampler(pipe.manifest).stochastic or resolved.latents is not None:
        # noise drawn inside the loop is drawn per call, even for equal seeds: never shared
        return Job(request, resolved, ("alone", next(_ALONE)))
    seeded = any(spec.seed == RUN_SEED for spec in pipe.manifest.plan.inputs.values())
    key: Hashable = (
        resolved.steps,
        resolved.guidance_scale,
        resolved.scheduler,
        resolved.height,
        resolved.width,
        resolved.negative_prompt,
        resolved.seed if seeded else None,  # tables drawn from the run's seed
    )
    return Job(request, resolved, key)


_ALONE = itertools.count()


def groups(pipe: Pipeline, jobs: Sequence[Job]) -> list[list[int]]:
    """Indices of ``jobs`` in calls: same keys together, in arrival order, each call's
    images within what the artifact takes at that guidance."""
    out: list[list[int]] = []
    open_: dict[Hashable, tuple[list[int], int]] = {}
    for i, item in enumerate(jobs):
        room = pipe.images_per_call(item.resolved.guidance_scale)
        count = item.resolved.batch
        current = open_.get(item.key)
        if current is not None and current[1] + count <= room:
            current[0].append(i)
            open_[item.key] = (current[0], current[1] + count)
            continue
        members = [i]
        out.append(members)
        open_[item.key] = (members, count)
    return out


def generate_together(pipe: Pipeline, jobs: Sequence[Job]) -> list[GenerateResult]:
    """One pipeline call for ``jobs`` (a group from :func:`groups`); each result holds its
    own request's images. A group of one is the plain call, as ``difforge run`` makes it."""
    if len(jobs) == 1:
        return [pipe(jobs[0].request)]
    first = jobs[0].resolved
    manifest = pipe.manifest.pipeline
    f = manifest.vae_scale_factor
    noise = [
        np.random.default_rng(j.resolved.seed).standard_normal(
            (j.resolved.batch, manifest.latent_channels, first.height // f, first.width // f),
            dtype=np.float32,
        )
        for j in jobs
    ]
    counts = [j.resolved.batch for j in jobs]
    together = replace(
        jobs[0].request,
        prompt=[p for j in jobs for p in j.resolved.prompts] or "",
        class_label=[label for j in jobs for label in j.resolved.labels] or None,
        latents=np.concatenate(noise),
    )
    result = pipe(together)
    edges = np.cumsum([0, *counts])
    return [
        replace(
            result,
            images=result.images[edges[i] : edges[i + 1]],
            request={**result.request, "seed": j.resolved.seed, "batch": counts[i]},
        )
        for i, j in enumerate(jobs)
    ]
