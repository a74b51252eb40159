"""Export stage: model sources, patches, ONNX export and verification.

``difforge.export`` is both this package and the API call ``difforge.export(config)``: Python
rebinds the package attribute to this module whenever a submodule is imported, so the module
itself is made callable and forwards to :func:`difforge.api.export`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, config: Any, reporter: Any = None) -> Any:
        from difforge.api import export

        return export(config, reporter)


sys.modules[__name__].__class__ = _CallableModule
