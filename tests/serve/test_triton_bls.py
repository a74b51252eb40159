"""The repository's pipeline model, run outside Triton: ``initialize``/``execute`` with a fake
``triton_python_backend_utils`` whose BLS requests are served in-process by the repository's
own component models (their copied graphs on difforge's ONNX Runtime runner, Triton's
config contract checked on every call). Its images must equal ``difforge.runtime.load(ART)``'s
on the same request byte for byte."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difforge.artifact.manifest import read_manifest
from difforge.errors import DifforgeError
from difforge.runtime import load
from difforge.serve.service import Service
from difforge.serve.triton import bls
from difforge.serve.triton.bls import PipelineModel
from difforge.serve.triton.repository import export_triton
from tests.serve.fake_pb_utils import InProcessTriton, TritonError, fake_pb_utils, json_request
from tests.serve.triton_artifacts import deepcache_artifact, digits_artifact, repository


def start(repo: Path) -> tuple[PipelineModel, InProcessTriton, Any]:
    server = InProcessTriton(repo)
    pb = fake_pb_utils(server)
    model = PipelineModel(pb)
    model.initialize(server.pipeline_args())
    return model, server, pb


def image(pb: Any, response: Any) -> np.ndarray:
    assert not response.has_error(), response.error().message()
    (tensor,) = response.output_tensors()
    assert tensor.name() == "image"
    return tensor.as_numpy()


def reference(art: Path, fields: dict[str, Any]) -> np.ndarray:
    """The images of ``fields`` (the HTTP request format) from the artifact's own runners."""
    pipe = load(art)
    return pipe(Service(pipe, None).admit(json.dumps(fields).encode()).job.request).images


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    art = digits_artifact(tmp_path_factory)
    return art, repository(tmp_path_factory, art)


def test_digits_requests_in_one_execute(digits: tuple[Path, Path]) -> None:
    art, repo = digits
    model, server, pb = start(repo)
    asks = [
        {"class_label": 3, "steps": 4, "seed": 11},
        {"class_label": 7, "images": 2, "steps": 3, "seed": 2, "guidance": 2.0},
        {"class_label": 9, "steps": 2, "seed": 5, "height": 48, "width": 40},
    ]
    responses = model.execute([json_request(pb, ask) for ask in asks])
    assert len(responses) == len(asks)
    for ask, response in zip(asks, responses, strict=True):
        got = image(pb, response)
        assert got.dtype == np.uint8 and got.shape[-1] == 1  # the config's channel dim
        assert np.array_equal(got, reference(art, ask)), ask
    calls = server.calls
    assert [c.model for c in calls] == ["denoiser"] * (4 + 3 + 2)
    assert all(c.outputs == ["noise_pred"] for c in calls)
    assert all(c.preferred_memory.preferred_memory_type == 0 for c in calls)  # CPU
    # [batch] tensors travel as [batch, 1]; guidance 2 doubles the two images of the second
    assert calls[4].shapes == {"sample": (4, 1, 32, 32), "timestep": (4, 1), "class_labels": (4, 1)}
    assert calls[-1].shapes["sample"] == (1, 1, 48, 40)


def test_text_to_image(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    repo = export_triton(tiny_sd_artifact, tmp_path / "repo").output
    model, server, pb = start(repo)
    ask = {"prompt": "a photo of a cat", "negative_prompt": "blurry", "steps": 3, "seed": 4,
           "guidance": 5.0}
    (response,) = model.execute([json_request(pb, ask)])
    got = image(pb, response)
    assert got.shape == (1, 256, 256, 3)
    assert np.array_equal(got, reference(tiny_sd_artifact, ask))
    manifest = read_manifest(tiny_sd_artifact)
    order = [c.model for c in server.calls]
    assert order == ["text_encoder", "denoiser", "denoiser", "denoiser", "vae_decoder"]
    for call in server.calls:
        assert call.outputs == [t.name for t in manifest.components[call.model].outputs]
    assert server.calls[0].shapes == {"input_ids": (2, 77)}  # [negative, prompt]
    assert server.calls[1].shapes["timestep"] == (2, 1)
    assert server.calls[-1].shapes == {"latent": (1, 4, 32, 32)}


def test_step_variants_run_as_their_own_models(tmp_path_factory: pytest.TempPathFactory) -> None:
    art = deepcache_artifact(tmp_path_factory)
    model, server, pb = start(repository(tmp_path_factory, art))
    ask = {"class_label": 6, "steps": 7, "seed": 3}
    assert np.array_equal(image(pb, model.execute([json_request(pb, ask)])[0]), reference(art, ask))
    plan = read_manifest(art).plan
    expected = [plan.variants[v].replace("@", "__") for v in plan.schedule(7)]
    assert "denoiser__shallow" in expected and "denoiser" in expected
    assert [c.model for c in server.calls] == expected
    shallow = next(c for c in server.calls if c.model == "denoiser__shallow")
    assert shallow.shapes["deepcache_feature"] == (1, 16, 32, 32)  # carried from a full step
    assert shallow.outputs == ["noise_pred"]


BAD = [
    (b"{not json", "request body is not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    ({"class_label": 3, "latents": [[0.0]]}, "unknown field 'latents'"),
    ({"class_label": 3, "steps": "4"}, "field 'steps' must be an integer"),
    ({"class_label": 3, "steps": True}, "field 'steps' must be an integer"),
    ({"class_label": 3, "steps": 2.5}, "field 'steps' must be an integer"),
    ({"class_label": ["3"]}, "field 'class_label' must be an integer"),
    ({"class_label": 3, "guidance": "high"}, "field 'guidance' must be a number"),
    ({"class_label": 10}, "class"),
    ({"prompt": "a cat"}, "prompt"),
    ({"class_label": 3, "height": 33}, "height 33 is not a multiple of 4"),
    ({"class_label": 3, "seed": -1}, "field 'seed' must be between 0 and 2^64 - 1"),
]


@pytest.mark.parametrize(("payload", "needle"), BAD)
def test_a_bad_request_is_answered_with_an_error_and_the_next_one_served(
    digits: tuple[Path, Path], payload: Any, needle: str
) -> None:
    art, repo = digits
    model, server, pb = start(repo)
    good = {"class_label": 2, "steps": 2, "seed": 8}
    bad, ok = model.execute([json_request(pb, payload), json_request(pb, good)])
    assert bad.has_error() and isinstance(bad.error(), TritonError)
    message = bad.error().message()
    assert needle in message and "\n" not in message, message
    assert bad.error().code() == TritonError.INVALID_ARG
    assert bad.output_tensors() == []
    assert np.array_equal(image(pb, ok), reference(art, good))
    assert len(server.calls) == 2  # the bad request reached no model


def test_a_failing_component_model_is_an_error_response(digits: tuple[Path, Path]) -> None:
    _, repo = digits
    model, server, pb = start(repo)
    served = server.models.pop("denoiser")
    ask = {"class_label": 1, "steps": 2}
    (failed,) = model.execute([json_request(pb, ask)])
    assert failed.error().code() == TritonError.INTERNAL
    assert failed.error().message() == (
        "denoiser: Triton model 'denoiser' failed: model 'denoiser' not found"
    )
    server.models["denoiser"] = served  # the pipeline model kept serving
    assert image(pb, model.execute([json_request(pb, ask)])[0]).shape == (1, 32, 32, 1)


def test_initialize_checks_what_the_pipeline_model_carries(
    tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    repo = export_triton(tiny_sd_artifact, tmp_path / "repo").output
    vocab = repo / "pipeline" / "1" / "artifact" / "tokenizer" / "vocab.json"
    vocab.write_bytes(vocab.read_bytes().replace(b'"a', b'"b', 1))
    with pytest.raises(DifforgeError, match="sha256 differs from the manifest"):
        start(repo)
    server = InProcessTriton(export_triton(tiny_sd_artifact, tmp_path / "r2").output)
    args = server.pipeline_args()
    config = json.loads(args["model_config"])
    del config["parameters"]
    with pytest.raises(DifforgeError, match="has no valid 'components' parameter"):
        PipelineModel(fake_pb_utils(server)).initialize(
            {**args, "model_config": json.dumps(config)}
        )


def test_the_repository_model_py_is_the_bls_model(
    digits: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipeline/1/model.py`` as Triton loads it: its ``TritonPythonModel`` takes no
    arguments and uses the server's ``triton_python_backend_utils``."""
    art, repo = digits
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    server = InProcessTriton(copy)
    pb = fake_pb_utils(server)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("model", copy / "pipeline" / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TritonPythonModel is bls.TritonPythonModel
    served = module.TritonPythonModel()
    assert served.pb is pb
    served.initialize(server.pipeline_args())
    ask = {"class_label": 4, "steps": 2, "seed": 1}
    (response,) = served.execute([json_request(pb, ask)])
    assert np.array_equal(image(pb, response), reference(art, ask))
    served.finalize()
    (after,) = served.execute([json_request(pb, ask)])
    assert after.error().code() == TritonError.UNAVAILABLE


def test_the_pipeline_model_is_torch_free(digits: tuple[Path, Path]) -> None:
    """What Triton's Python backend runs (model.py -> difforge.serve.triton.bls) and a whole
    generation through it pull in no torch, no ONNX or ONNX Runtime and no compiler stage
    (a stub stands for Triton: every denoiser call answers zeros)."""
    _, repo = digits
    model_config = InProcessTriton(repo).pipeline_args()["model_config"]
    script = textwrap.dedent(
        f"""
        import json, sys, types
        import numpy as np

        pb = types.ModuleType("triton_python_backend_utils")
        class Tensor:
            def __init__(self, name, array): self._n, self._a = name, array
            def name(self): return self._n
            def as_numpy(self): return self._a
        class Response:
            def __init__(self, output_tensors=(), error=None):
                self.tensors, self.err = list(output_tensors), error
            def has_error(self): return self.err is not None
            def error(self): return self.err
            def output_tensors(self): return self.tensors
        class Request:
            def __init__(self, model_name, requested_output_names, inputs, **kw):
                self.inputs_ = inputs
            def inputs(self): return self.inputs_
            def exec(self):
                sample = next(t for t in self.inputs_ if t.name() == "sample").as_numpy()
                return Response([Tensor("noise_pred", np.zeros_like(sample))])
        pb.Tensor, pb.InferenceResponse, pb.InferenceRequest = Tensor, Response, Request
        pb.TritonError = lambda message, *code: message
        pb.get_input_tensor_by_name = lambda r, n: next(t for t in r.inputs() if t.name() == n)
        pb.get_output_tensor_by_name = lambda r, n: next(
            t for t in r.output_tensors() if t.name() == n)
        sys.modules["triton_python_backend_utils"] = pb

        from difforge.serve.triton.bls import TritonPythonModel

        model = TritonPythonModel()
        model.initialize({{"model_config": {model_config!r},
                           "model_repository": {str(repo / "pipeline")!r}, "model_version": "1"}})
        ask = json.dumps({{"class_label": 3, "steps": 2}}).encode()
        (response,) = model.execute([Request("pipeline", ["image"],
                                             [Tensor("request", np.array([ask], dtype=object))])])
        assert not response.has_error(), response.error()
        assert response.output_tensors()[0].as_numpy().shape == (1, 32, 32, 1)

        heavy = ("torch", "diffusers", "transformers", "onnx", "onnxruntime", "tritonclient",
                 "difforge.exporter", "difforge.engines", "difforge.passes", "difforge.calib",
                 "difforge.sources", "difforge.patches", "difforge.plugins")
        loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".")
                                                      for h in heavy))
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
