"""OpenVINO engines (CPU): compiled from the ONNX graph, lowered by precision."""
