"""The unit tests' fixtures: the fake engine behind a real server, and counted sympy workers.
Nothing here starts the real engine or imports vLLM (tests/engine/conftest.py has its fixtures).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.serving import LiveServer, serve_in_thread


@pytest.fixture(scope="session")
def fake_server() -> Iterator[LiveServer]:
    """The app on the scripted FakeEngine behind a real uvicorn on 127.0.0.1: fast, no model.

    Each request takes about 2 x ``delay`` (the fake sleeps before the first token, then spreads
    ``delay`` over the tokens), so timings are measurable. API key ``fake-key``.
    """
    from winnow.engine.fake import FakeEngine
    from winnow.server.app import create_app
    from winnow.settings import Settings

    engine = FakeEngine(delay=0.02)
    app = create_app(Settings(api_key="fake-key", request_timeout=30), engine)
    with serve_in_thread(app, engine=engine, api_key="fake-key") as server:
        yield server


@pytest.fixture
def sympy_worker_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions asked of the sympy workers from now on (counted, then run as usual): a
    count, not a wall-clock bound, says that work was skipped, on a loaded machine too."""
    from winnow.answers import workers as answer_workers

    calls: list[str] = []
    real = answer_workers.call

    def counted(function: str, *args: object) -> object:
        calls.append(function)
        return real(function, *args)

    monkeypatch.setattr(answer_workers, "call", counted)
    return calls
