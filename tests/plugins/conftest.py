"""Shared setup for the plugin tests: Triton runs on the CPU interpreter here."""

import os

# Must be set before triton is first imported, or triton finds "0 active drivers".
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
