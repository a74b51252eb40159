"""A compiled artifact as an NVIDIA Triton Inference Server model repository
(``difforge export-triton ART -o REPO``).

One Triton model per component graph (each step-plan variant its own model), served by
Triton's own backends (``onnxruntime``, ``tensorrt_plan``), and one Python-backend model,
``pipeline``, that runs difforge's sampling loop and calls the component models through
Business Logic Scripting (BLS). Modules:

- ``layout``: what goes where (model names, files, batching rule, data types); no Triton
  library needed, shared by the writer and the served pipeline model;
- ``config``: the models' ``config.pbtxt`` as ``tritonclient``'s ``ModelConfig`` messages;
- ``repository``: artifact -> repository, written into a staging folder and renamed;
- ``readme``: the README written into the repository;
- ``bls_runner``: a runtime :class:`~difforge.runtime.runners.base.Runner` whose engine is a
  Triton model reached by BLS;
- ``bls``: the pipeline model (``TritonPythonModel``) the generated ``model.py`` imports;
- ``request_json``: the pipeline model's request tensor -> the JSON body ``difforge serve``
  takes (read and checked by :mod:`difforge.serve.schema` and the service).

Nothing here imports torch or difforge's compiler stages; ``triton_python_backend_utils``
exists only inside Triton's Python backend, so it is passed in (tests hand in a fake).
"""
