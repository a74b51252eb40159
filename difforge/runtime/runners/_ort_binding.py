"""ONNX Runtime's I/O binding: a call's outputs left where the session made them, and fed to a
later call from there.

With the CUDA or TensorRT provider, a plain ``session.run`` copies every output to the host
and every input back to the device. The state a step plan carries between steps (DeepCache's
deep feature, Faster Diffusion's skip tensors, RAS's per-layer K/V caches: up to 2 x 9 tensors
a call) is only ever fed to a later call of the same pipeline, so it can stay on the device:
those outputs come back as :class:`DeviceTensor`, which the next call binds without a copy.
What the host needs (the noise prediction, the decoded image) is copied as usual. A
``DeviceTensor`` read by numpy (a batched call stacking carried tensors) is copied to the
host then, so nothing downstream has to know where a tensor lives.

The same code runs on the CPU provider (the device is then the host, and binding saves ONNX
Runtime's own output allocation copies); that is how it is tested on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

#: providers whose outputs live on an NVIDIA GPU (device 0)
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})

_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


class DeviceTensor:
    """An output ONNX Runtime left on its device (an ``OrtValue``): shape and dtype readable
    as a numpy array's, its values copied to the host only when numpy asks for them."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.value.shape())

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_TYPES[self.value.data_type()])

    @property
    def device(self) -> str:
        return str(self.value.device_name())

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        host = self.value.numpy()
        return host if dtype is None else host.astype(dtype)


def binding_device(providers: list[str]) -> str:
    """Where a session with ``providers`` puts its outputs: ``cuda`` or ``cpu``."""
    return "cuda" if providers and providers[0] in GPU_PROVIDERS else "cpu"


def run_bound(
    session: Any,
    feeds: dict[str, Any],
    output_names: list[str],
    keep: Iterable[str],
    device: str,
) -> dict[str, Any]:
    """One call through I/O binding: host arrays copied in, device tensors bound as they are;
    the outputs named in ``keep`` returned as :class:`DeviceTensor`, the others as arrays."""
    binding = session.io_binding()
    for name, value in feeds.items():
        if isinstance(value, DeviceTensor):
            binding.bind_ortvalue_input(name, value.value)
        else:
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for name in output_names:
        binding.bind_output(name, device)
    session.run_with_iobinding(binding)
    values = binding.get_outputs()
    kept = set(keep)
    return {
        name: DeviceTensor(value) if name in kept else value.numpy()
        for name, value in zip(output_names, values, strict=True)
    }
