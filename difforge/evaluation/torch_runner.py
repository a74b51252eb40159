"""A runner that executes a PyTorch component behind the runtime's ``Runner`` interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from difforge.artifact.manifest import ComponentEntry
from difforge.runtime.runners.base import Runner


class TorchRunner(Runner):
    """Feeds are checked like any engine's; ``before`` runs first (e.g. picks a variant)."""

    def __init__(
        self,
        name: str,
        spec: ComponentEntry,
        module: torch.nn.Module,
        before: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name, spec)
        self.module = module
        self.before = before

    def _activate(self) -> None:
        self.module.eval()

    @torch.no_grad()
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.before is not None:
            self.before()
        args = [torch.from_numpy(np.ascontiguousarray(feeds[t.name])) for t in self.spec.inputs]
        out: Any = self.module(*args)
        outputs = out if isinstance(out, tuple) else (out,)
        return {
            t.name: o.detach().float().numpy()
            for t, o in zip(self.spec.outputs, outputs, strict=True)
        }
