"""The export stage: a prepared model (source + patches) -> one verified ONNX graph per
component, written as an export folder (an artifact at stage "exported").

- ``prepare``: load the source, apply the patches, list the components
- ``specs``, ``components``: one declarative spec and wrapper per component
- ``onnx_export``: torch.export (dynamo) with dynamic shapes from the spec, custom ops
- ``verify``: ONNX Runtime against PyTorch at the min/opt/max shapes
- ``export``: the whole stage (:func:`difforge.exporter.export.export`, the API's ``export``)
"""
