"""Test-wide setup: no network, no hub, a private GENEVOLVE_HOME per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["GENEVOLVE_OFFLINE"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _genevolve_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("genevolve_home")
    old = os.environ.get("GENEVOLVE_HOME")
    os.environ["GENEVOLVE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("GENEVOLVE_HOME", None)
    else:
        os.environ["GENEVOLVE_HOME"] = old


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test (restored after): exact, comparable training runs."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# Tiny random models built offline from configs, shared by the policy and training tests.
from helpers.tiny_models import tiny_gemma_path, tiny_qwen3vl_path  # noqa: E402,F401
