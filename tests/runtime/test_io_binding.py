"""ONNX Runtime's I/O binding, run on the CPU provider: the same images as plain calls, the
state a step plan carries handed from call to call as device tensors (never through numpy),
and device tensors that read as arrays wherever numpy needs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from difforge.runtime import GenerateRequest, load
from difforge.runtime.runners._ort_binding import DeviceTensor, binding_device
from tests.digits_artifacts import compile_digits

pytestmark = pytest.mark.slow

CASES = [
    ("digits-unet", "deepcache:interval=3"),
    ("digits-dit", "ras:ratio=0.5,start=2,resets=none,metric=l2norm"),
]


_BUILT: dict[tuple[str, str], Path] = {}


def artifact(factory: pytest.TempPathFactory, model: str, patch: str) -> Path:
    if (model, patch) not in _BUILT:
        _BUILT[model, patch] = compile_digits(factory.mktemp(model) / "a", model, [patch])
    return _BUILT[model, patch]


@pytest.mark.parametrize(("model", "patch"), CASES)
def test_bound_calls_make_the_same_images_with_carried_state_left_bound(
    tmp_path_factory: pytest.TempPathFactory, model: str, patch: str
) -> None:
    art = artifact(tmp_path_factory, model, patch)
    request = GenerateRequest(class_label=[3, 8], seed=5, steps=7)
    plain = load(art)(request).images
    pipe = load(art, io_binding=True)
    fed: list[tuple[str, type]] = []
    returned: list[tuple[str, type]] = []
    assert any(r.carried_outputs for r in pipe.runners.values())
    for runner in pipe.runners.values():
        assert runner.io_binding  # type: ignore[attr-defined]
        infer = runner._infer

        def recording(feeds: dict[str, Any], infer: Any = infer, runner: Any = runner) -> Any:
            carried = set(pipe.plan.carry)
            fed.extend((k, type(v)) for k, v in feeds.items() if k in carried)
            out = infer(feeds)
            returned.extend((k, type(v)) for k, v in out.items() if k in runner.carried_outputs)
            return out

        runner._infer = recording  # type: ignore[method-assign]
    bound = pipe(request).images
    assert np.array_equal(bound, plain)
    assert fed and all(kind is DeviceTensor for _, kind in fed), fed
    assert returned and all(kind is DeviceTensor for _, kind in returned), returned
    assert len(fed) >= len(pipe.plan.carry)  # every carried input reached a later call


def test_carried_outputs_are_what_the_plan_carries(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    art = artifact(tmp_path_factory, *CASES[0])
    pipe = load(art)
    carried = set(pipe.plan.carry.values())
    assert carried and "noise_pred" not in carried
    for key, runner in pipe.runners.items():
        outputs = {t.name for t in pipe.manifest.components[key].outputs}
        assert runner.carried_outputs == carried & outputs
        assert not runner.io_binding  # type: ignore[attr-defined]  # CPU: off unless asked


def test_a_device_tensor_reads_as_an_array() -> None:
    host = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    tensor = DeviceTensor(ort.OrtValue.ortvalue_from_numpy(host))
    assert (tensor.shape, tensor.ndim, tensor.dtype, len(tensor)) == ((2, 3, 4), 3, np.float32, 2)
    assert tensor.device == "cpu"
    assert np.array_equal(np.asarray(tensor), host)
    stacked = np.concatenate([tensor, tensor])  # a batched call stacking carried state
    assert stacked.shape == (4, 3, 4) and np.array_equal(stacked[2:], host)
    assert np.asarray(tensor, dtype=np.float16).dtype == np.float16


def test_gpu_providers_bind_to_the_gpu() -> None:
    assert binding_device(["CUDAExecutionProvider", "CPUExecutionProvider"]) == "cuda"
    assert binding_device(["TensorrtExecutionProvider", "CUDAExecutionProvider"]) == "cuda"
    assert binding_device(["CPUExecutionProvider"]) == "cpu"
