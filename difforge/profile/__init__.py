"""difforge.profile: where the time goes, and how difforge compares.

- ``difforge profile`` (:mod:`difforge.profile.profiler`): stage latencies with percentiles,
  cold start in a fresh process, peak memory, ONNX Runtime per-op time grouped by op type and
  by PyTorch source module, the denoiser's roofline ratio, resolution sweeps; written as
  report.json (schema in ``schema/report.schema.json``), report.md and report.html.
- ``difforge bench`` (:mod:`difforge.profile.bench`): the same denoiser through PyTorch eager,
  torch.compile, plain ONNX Runtime, OpenVINO and difforge's artifact, alternating calls.

The click commands live in :mod:`difforge.cli.profile` and :mod:`difforge.cli.bench`.
"""
