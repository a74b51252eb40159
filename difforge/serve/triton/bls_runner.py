"""A runtime runner whose engine is a Triton model, called through Business Logic Scripting.

Inside Triton's Python backend the pipeline model runs difforge's sampling loop unchanged; only
its runners differ: each sends the feeds it is given (already checked against the manifest by
:meth:`Runner.infer`) to the component's Triton model as a BLS request and returns the outputs
the manifest names. ``pb_utils`` is Triton's ``triton_python_backend_utils`` module, passed in
(it exists only inside the server; tests hand in a fake).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from difforge.artifact.manifest import ComponentEntry
from difforge.errors import DifforgeError
from difforge.runtime.runners.base import Runner
from difforge.serve.triton.layout import wire_reshaped


class TritonBlsRunner(Runner):
    """Runs component ``name`` as the Triton model ``model`` (``batched``: served with
    ``max_batch_size`` > 0, so a ``[batch]`` tensor travels as ``[batch, 1]``)."""

    backend = "triton-bls"

    def __init__(
        self, name: str, spec: ComponentEntry, model: str, batched: bool, pb_utils: Any
    ) -> None:
        super().__init__(name, spec)
        self.model = model
        self.batched = batched
        self.pb = pb_utils
        self._outputs = [t.name for t in spec.outputs]
        self._reshaped = {
            t.name for t in [*spec.inputs, *spec.outputs] if wire_reshaped(t, batched)
        }

    def _activate(self) -> None:
        """Nothing to load: Triton serves the model (and reports it missing at the call)."""

    def _request_kwargs(self) -> dict[str, Any]:
        # Ask for the outputs in CPU memory (a TensorRT model answers on the GPU otherwise);
        # Python backends older than 23.x have no PreferredMemory and answer on the CPU.
        memory = getattr(self.pb, "PreferredMemory", None)
        cpu = getattr(self.pb, "TRITONSERVER_MEMORY_CPU", None)
        if memory is None or cpu is None:
            return {}
        return {"preferred_memory": memory(cpu, 0)}

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = []
        for tensor in self.spec.inputs:
            value = np.ascontiguousarray(feeds[tensor.name])
            if tensor.name in self._reshaped:
                value = value.reshape(*value.shape, 1)
            inputs.append(self.pb.Tensor(tensor.name, value))
        request = self.pb.InferenceRequest(
            model_name=self.model,
            requested_output_names=list(self._outputs),
            inputs=inputs,
            **self._request_kwargs(),
        )
        response = request.exec()
        if response.has_error():
            message = " ".join(str(response.error().message()).split())
            raise DifforgeError(f"{self.name}: Triton model '{self.model}' failed: {message}")
        out: dict[str, np.ndarray] = {}
        for name in self._outputs:
            tensor = self.pb.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise DifforgeError(
                    f"{self.name}: Triton model '{self.model}' returned no output '{name}'"
                )
            value = np.asarray(tensor.as_numpy())
            if name in self._reshaped:
                if value.shape[-1:] != (1,):
                    raise DifforgeError(
                        f"{self.name}: Triton model '{self.model}' returned {name} of shape "
                        f"{value.shape}; expected a trailing 1"
                    )
                value = value.reshape(value.shape[:-1])
            out[name] = value
        return out
