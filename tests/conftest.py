import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist runs one worker per core: one thread each avoids oversubscription.
    torch.set_num_threads(1)
