"""The artifact: the one contract between difforge's stages.

An artifact is a folder: one ONNX graph (or engine) per component, shared weight files, the
tokenizer, and ``manifest.json`` (format 2, typed here). Export writes it, calibration and
build read it and write a new one, the runtime and the reports only read it. This package is
torch-free and imports nothing of difforge but :mod:`difforge.errors`, so every stage can
depend on it and on nothing upstream of itself.

- :mod:`~difforge.artifact.manifest`: the typed manifest, read and written (``fields`` checks it;
  ``sections``: its pipeline, scheduler and tokenizer sections)
- :mod:`~difforge.artifact.files`: file hashes, checked at load
- :mod:`~difforge.artifact.step_plan`, :mod:`~difforge.artifact.step_tables`: which graph runs
  at which step, per-step input tables, tensors carried between steps
- :mod:`~difforge.artifact.staging`: folders that appear whole or not at all
- :mod:`~difforge.artifact.weights`: one weight file shared by a component's graph variants
- :mod:`~difforge.artifact.feeds`: sample inputs from a component's entry
- :mod:`~difforge.artifact.view`: the manifest, readably (``difforge info``)
"""

from difforge.artifact.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ComponentEntry,
    EngineRecord,
    Manifest,
    PassRecord,
    Stage,
    TensorSpec,
    read_manifest,
    write_manifest,
)
from difforge.artifact.sections import (
    PipelineSection,
    Resolution,
    SchedulerSection,
    TokenizerSection,
)
from difforge.artifact.step_plan import StepPlan

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ComponentEntry",
    "EngineRecord",
    "Manifest",
    "PassRecord",
    "PipelineSection",
    "Resolution",
    "SchedulerSection",
    "Stage",
    "StepPlan",
    "TensorSpec",
    "TokenizerSection",
    "read_manifest",
    "write_manifest",
]
