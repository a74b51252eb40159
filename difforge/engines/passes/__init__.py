"""Graph passes on onnx-ir models, each an ``onnx_ir.passes`` pass that reports whether it changed
the model; backends chain the ones they want with ``onnx_ir.passes.PassManager``."""
