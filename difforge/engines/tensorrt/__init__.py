"""TensorRT engines: the builder, its optimization profiles, the engine cache and the one
module that calls TensorRT (``trt_api``)."""
