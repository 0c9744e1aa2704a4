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
