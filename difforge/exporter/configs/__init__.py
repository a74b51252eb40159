"""One component-config builder per pipeline kind (cf. Optimum's export configs), registered
by the ``kind`` a source declares."""

from __future__ import annotations

from collections.abc import Callable

from difforge.exporter.configs.class_models import class_to_image
from difforge.exporter.configs.common import BuildRequest, Component
from difforge.exporter.configs.flux import flux
from difforge.exporter.configs.text_unet import sdxl, stable_diffusion

BUILDERS: dict[str, Callable[[BuildRequest], dict[str, Component]]] = {
    "text-to-image": stable_diffusion,
    "sdxl": sdxl,
    "class-to-image": class_to_image,
    "flux": flux,
}

__all__ = ["BUILDERS", "BuildRequest", "Component"]
