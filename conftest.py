"""Fixtures for every test and doctest of the repository (tests/ and the package's own)."""

import pytest


@pytest.fixture(autouse=True)
def _registry_restored():
    """Executor names registered by a test or doctest are gone after it, so that
    no test sees names another registered (the order of tests does not matter)."""
    from flowdispatch.executors import registry

    saved = dict(registry._factories)
    yield
    registry._factories.clear()
    registry._factories.update(saved)
