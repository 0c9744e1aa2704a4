"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Small models: 1 torch thread is faster than 2, and much faster on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def float64():
    """Tensors default to float64 inside the test."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
