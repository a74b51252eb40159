"""Fixtures for the patch tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def diffusers_logs() -> Iterator[None]:
    """Let caplog see diffusers' warnings (its logger does not propagate by default)."""
    from diffusers.utils import logging

    logging.enable_propagation()
    try:
        yield
    finally:
        logging.disable_propagation()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread than on two contended ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
