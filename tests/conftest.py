import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_threads():
    """Two cores: keep torch from oversubscribing when pytest runs beside other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)
