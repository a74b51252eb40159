"""Importing this package registers the ``torch.ops.difforge`` custom ops."""

from difforge.plugins.ops.depthwise_conv import depthwise_conv2d, depthwise_conv2d_reference
from difforge.plugins.ops.local_attention import local_attention_2d, local_attention_2d_gather

__all__ = [
    "depthwise_conv2d",
    "depthwise_conv2d_reference",
    "local_attention_2d",
    "local_attention_2d_gather",
]
