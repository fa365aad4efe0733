from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

REQUIRE_SERVICES = os.environ.get("PIPELINE_APP_REQUIRE_SERVICES") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Multi-process worker tests need a server database: they run in the PostgreSQL pass."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    deselected = [item for item in items if item.get_closest_marker("postgres_only")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("postgres_only")]


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> str:
    """Return the URL of a service tests need; skip locally, fail in CI when it is down."""
    if _reachable(url, default_port):
        return url
    message = f"{name} at {url} is unreachable"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (required: PIPELINE_APP_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    return require_service("Redis", url, 6379)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    return require_service("PostgreSQL", url, 5432)


@pytest.fixture
def subprocess_env(transactional_db: None) -> dict[str, str]:
    """Environment for a ``manage.py`` subprocess that uses the test database."""
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{settings['NAME']}"
    else:
        user = settings["USER"] or "postgres"
        host = f"{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}"
        url = f"postgres://{user}@{host}/{settings['NAME']}"
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL"}}
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=url, DEBUG="1")
    return env


@pytest.fixture
def synced_pipelines(transactional_db: None) -> None:
    """Code-defined pipelines as definitions (transactional tests flush them between tests)."""
    from pipeline_app.definitions import sync_code_pipelines

    sync_code_pipelines()
