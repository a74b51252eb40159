"""One test case per registered name, for the registries that grow: patches and presets.

``tests/test_completeness.py`` fails when a patch, preset, graph pass, engine or runner is
registered without its case here (or, for passes, engines and runners, without its test
module), so nothing lands untested.
"""

from __future__ import annotations

#: (preset, --patch, resolution): compiled, run torch-free and held to the patched PyTorch
#: pipeline by tests/patches/test_patched_pipelines.py
PATCH_CASES = [
    ("tiny-sd", "linfusion", 128),
    ("tiny-sd", "msw-msa", 128),
    ("tiny-sd", "redilate:scale=2,tau=30", 256),
    ("tiny-sd", "raunet", 256),
    ("tiny-sd", "deepcache:interval=3", 128),
    ("tiny-sd", "faster-diffusion:interval=3,noise=0", 128),
    ("tiny-lk-unet", "reparam", 128),
    ("tiny-dit", "clear:radius=8", 128),
    ("tiny-flux", "ras:ratio=0.5,start=2,resets=none", 256),
    ("tiny-flux", "clear:radius=8", 256),
]

#: preset -> (pipeline kind, component roles): built and run in PyTorch by
#: tests/sources/test_presets.py
PRESET_CASES = {
    "tiny-sd": ("text-to-image", ("text_encoder", "denoiser", "vae_decoder")),
    "tiny-dit": ("class-to-image", ("denoiser", "vae_decoder")),
    "tiny-flux": ("flux", ("text_encoder", "denoiser", "vae_decoder")),
    "tiny-lk-unet": ("text-to-image", ("text_encoder", "denoiser", "vae_decoder")),
}
