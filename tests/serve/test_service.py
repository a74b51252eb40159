"""The service behind every server: admission (each refusal a 4xx naming its field), batches
across clients (each request its own seed, its image as if it ran alone), and replies."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difforge.runtime import GenerateRequest, Pipeline, load
from difforge.runtime.image import encode_image
from difforge.serve.batching import groups
from difforge.serve.schema import RequestError
from difforge.serve.service import Reply, Service
from tests.digits_artifacts import shared_digits_artifact


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return load(shared_digits_artifact(tmp_path_factory, "digits-unet"))


@pytest.fixture(scope="module")
def tiny_sd(tiny_sd_artifact: Path) -> Pipeline:
    return load(tiny_sd_artifact)


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def pixels(reply: Reply) -> np.ndarray:
    assert reply.status == 200 and reply.content_type == "image/png"
    return np.asarray(Image.open(io.BytesIO(reply.body)))


def test_one_request_is_the_plain_call(digits: Pipeline) -> None:
    service = Service(digits, max_batch=4)
    [reply] = service.run([service.admit(body(class_label=7, seed=11, steps=6))])
    alone = digits(GenerateRequest(class_label=7, seed=11, steps=6)).images[0]
    assert reply.body == encode_image(alone)  # the bytes `difforge run --out x.png` writes
    stages = dict(part.split(";dur=") for part in reply.headers["server-timing"].split(", "))
    assert {"queue", "conditioning", "denoiser", "vae_decoder", "total"} <= stages.keys()
    assert all(float(v) >= 0 for v in stages.values())
    assert reply.headers["x-difforge-batch"] == "1" and service.served == 1


def test_requests_share_a_call_and_keep_their_seeds(digits: Pipeline) -> None:
    service = Service(digits, max_batch=4)
    asks = [(3, 1), (3, 2), (5, 1)]  # (class, seed): two seeds of one class, one other class
    tickets = [service.admit(body(class_label=c, seed=s, steps=6)) for c, s in asks]
    replies = service.run(tickets)
    assert [r.headers["x-difforge-batch"] for r in replies] == ["3"] * 3
    for (label, seed), reply in zip(asks, replies, strict=True):
        alone = digits(GenerateRequest(class_label=label, seed=seed, steps=6)).images[0]
        assert np.array_equal(pixels(reply), alone[..., 0])
    assert not np.array_equal(pixels(replies[0]), pixels(replies[1]))


def test_groups_follow_settings_and_the_artifacts_room(digits: Pipeline) -> None:
    service = Service(digits, max_batch=4)
    assert digits.images_per_call(1.0) == 8  # max-batch 4, doubled for guidance
    jobs = [
        service.admit(body(**fields)).job
        for fields in (
            {"steps": 6, "seed": 1},
            {"steps": 7, "seed": 2},  # other steps: its own call
            {"steps": 6, "seed": 3, "images": 4},
            {"steps": 6, "seed": 4, "images": 4},  # 1 + 4 + 4 > 8 images: a second call
            {"steps": 6, "seed": 5, "resolution": 64},  # other size
        )
    ]
    assert groups(digits, jobs) == [[0, 2], [1], [3], [4]]


def test_several_images_from_one_seed_as_the_python_api(digits: Pipeline) -> None:
    service = Service(digits, max_batch=4)
    [reply] = service.run([service.admit(body(class_label=2, seed=9, steps=5, images=3,
                                              output="json"))])
    data = json.loads(reply.body)
    api = digits(GenerateRequest(class_label=[2, 2, 2], seed=9, steps=5)).images
    assert len(data["images"]) == 3 and data["batch"] == 1
    for encoded, image in zip(data["images"], api, strict=True):
        assert base64.b64decode(encoded) == encode_image(image)
    assert data["request"]["seed"] == 9 and data["request"]["steps"] == 5
    assert data["timings"]["total"] > 0 and len(data["step_seconds"]) == 5


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"prompt": "a cat"}, 422, "prompt"),  # a prompt to a class model
        ({"negative_prompt": "blur"}, 422, "negative_prompt"),
        ({"class_label": 10}, 422, "class_label"),
        ({"resolution": 1024}, 422, "height"),
        ({"width": 33}, 422, "width"),  # not a multiple of the model's factor
        ({"images": 9}, 422, "images"),  # more than one call of this artifact holds
        ({"steps": 0}, 422, "steps"),
        ({"scheduler": "ddim"}, 422, "scheduler"),  # a flow model
        ({"scheduler": "nope"}, 422, "scheduler"),
        ({"steps": "many"}, 400, "steps"),
    ],
)
def test_refusals_name_the_field(digits: Pipeline, fields: dict, status: int, field: str) -> None:
    service = Service(digits, max_batch=4)
    with pytest.raises(RequestError) as info:
        service.admit(body(**fields))
    assert (info.value.status, info.value.field) == (status, field), str(info.value)
    assert service.served == 0


def test_text_requests_batch_and_stochastic_samplers_do_not(tiny_sd: Pipeline) -> None:
    service = Service(tiny_sd, max_batch=2)
    settings = {"steps": 4, "guidance": 1.0}
    prompts = [("a red cube", 1), ("a blue ball", 2)]
    replies = service.run(
        [service.admit(body(prompt=p, seed=s, **settings)) for p, s in prompts]
    )
    assert [r.headers["x-difforge-batch"] for r in replies] == ["2", "2"]
    for (prompt, seed), reply in zip(prompts, replies, strict=True):
        alone = tiny_sd(GenerateRequest(prompt=prompt, seed=seed, steps=4, guidance_scale=1.0))
        diff = np.abs(pixels(reply).astype(int) - alone.images[0].astype(int))
        assert diff.max() <= 1, diff.max()  # batched kernels may round differently
    # Ancestral sampling draws its noise per call: two seeds never share one.
    ancestral = [
        service.admit(body(prompt="a cube", seed=s, scheduler="euler-ancestral", **settings)).job
        for s in (1, 2, 2)  # equal seeds too: the loop's draws are per call
    ]
    assert groups(tiny_sd, ancestral) == [[0], [1], [2]]
    with pytest.raises(RequestError) as info:
        service.admit(body(class_label=1))
    assert (info.value.status, info.value.field) == (422, "class_label")


def test_a_request_larger_than_the_servers_batch_is_refused(digits: Pipeline) -> None:
    service = Service(digits, max_batch=2)
    with pytest.raises(RequestError) as info:
        service.admit(body(images=3))
    assert (info.value.status, info.value.field) == (422, "images")
    assert "--max-batch" in str(info.value)
    assert Service(digits, max_batch=None).admit(body(images=3)).job.resolved.batch == 3


def test_a_failing_engine_is_a_500_for_its_group_only(
    digits: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    import difforge.serve.service as service_module
    from difforge.errors import DifforgeError

    real = service_module.generate_together

    def flaky(pipe: Pipeline, jobs: list) -> list:
        if jobs[0].resolved.steps == 3:
            raise DifforgeError("denoiser: the engine failed")
        return real(pipe, jobs)

    monkeypatch.setattr(service_module, "generate_together", flaky)
    service = Service(digits, max_batch=4)
    bad, good = service.run(
        [service.admit(body(steps=3)), service.admit(body(steps=4, class_label=1))]
    )
    assert bad.status == 500
    assert json.loads(bad.body)["error"] == "generation failed: denoiser: the engine failed"
    assert good.status == 200 and service.served == 1


def test_info_says_what_is_served(digits: Pipeline, tiny_sd: Pipeline) -> None:
    info = Service(digits, max_batch=4).info()
    assert info["conditioning"] == "class_label" and info["classes"] == 10
    assert info["resolution"] == {"min": 32, "max": 64, "default": 32}
    assert info["max_batch"] == 4 and info["status"] == "ready"
    assert Service(tiny_sd, max_batch=1).info()["conditioning"] == "prompt"
