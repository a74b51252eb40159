"""Re-parameterisable convolution backbones (UniRepLKNet, InceptionNeXt) and a tiny UNet built
from them, used to exercise the ``reparam`` deploy pass."""
