"""pytest fixtures for the Vltava end-to-end tests (see broker_process.py)."""

from __future__ import annotations

from typing import Iterable

import pytest

from broker_process import Broker, BrokerFactory


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterable[Broker]:
    """One broker for the whole test module (default overrides)."""
    factory = BrokerFactory(tmp_path_factory.mktemp("vltava"))
    b = factory.start()
    yield b
    factory.close()  # raises if the broker died, exited non-zero or hung at shutdown


@pytest.fixture
def broker_factory(tmp_path) -> Iterable[BrokerFactory]:
    """Per-test factory for brokers with special overrides or restarts."""
    factory = BrokerFactory(tmp_path)
    yield factory
    factory.close()  # raises if a broker died, exited non-zero or hung at shutdown


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the stderr tail of every broker a failing test used."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or call.when != "call":
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Broker):
            rep.sections.append((f"vltava stderr tail ({name})", value.stderr_tail()))
        elif isinstance(value, BrokerFactory):
            for i, b in enumerate(value.brokers):
                rep.sections.append((f"vltava stderr tail ({name} #{i})", b.stderr_tail()))
