"""``--precision``: which precision each component is built in.

``int8`` names the denoiser's precision (every denoiser graph of a stepped model); the other
components stay fp32 unless named: ``--precision denoiser=int8,vae_decoder=fp16``. A bare
value is the denoiser's because it is what runs at every step; lowering the text encoder or the
decoder is a choice the user makes by name.
"""

from __future__ import annotations

from collections.abc import Iterable

from difforge.artifact.manifest import PRECISIONS
from difforge.errors import DifforgeError

#: the component roles an artifact may have, and the second text encoder (SDXL's second
#: CLIP, FLUX's T5), which shares its role but may be named alone (T5 overflows in fp16)
ROLES = ("text_encoder", "denoiser", "vae_decoder", "text_encoder_2")
#: precisions that need recorded activations (scales)
NEEDS_CALIBRATION = ("int8",)
#: INT8 calibration methods (ONNX Runtime's CalibrationMethod names, lower-cased)
CALIB_METHODS = ("minmax", "percentile", "entropy")


def parse_precision(text: str | None) -> dict[str, str]:
    """``int8`` -> {"denoiser": "int8"}; ``denoiser=int8,vae_decoder=fp16`` -> both."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for part in text.split(","):
        role, sep, value = part.strip().rpartition("=")
        role = role.strip() if sep else "denoiser"
        value = value.strip()
        if value not in PRECISIONS:
            raise DifforgeError(
                f"--precision: unknown precision {value!r} (one of {', '.join(PRECISIONS)})"
            )
        if not role:
            raise DifforgeError(f"--precision: {part!r} names no component")
        if role not in ROLES:
            raise DifforgeError(
                f"--precision: unknown component {role!r} (one of {', '.join(ROLES)})"
            )
        if role in out:
            raise DifforgeError(f"--precision names {role} twice")
        out[role] = value
    return out


def component_precisions(
    wanted: dict[str, str], keys: Iterable[str], roles: dict[str, str]
) -> dict[str, str]:
    """Per component key (``denoiser``, ``denoiser@late``, ...) its precision; ``roles`` maps
    each key to its role. A name is a role (``text_encoder`` covers both text encoders) or a
    component (``text_encoder_2``), the component's name winning; one the artifact does not
    have is refused."""
    keys = list(keys)
    known = set(roles.values()) | {key.partition("@")[0] for key in keys}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise DifforgeError(
            f"--precision names {', '.join(unknown)}, which this artifact does not have "
            f"(its components: {', '.join(sorted(known))})"
        )
    return {
        key: wanted.get(key.partition("@")[0], wanted.get(roles[key], "fp32")) for key in keys
    }
