"""The demo project: settings from the environment, deploy checks, the ASGI application."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from channels.testing import HttpCommunicator

REPO = Path(__file__).resolve().parent.parent


def settings_in_subprocess(env: dict[str, str], expression: str) -> object:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({expression}, default=str))"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "DATABASE_URL", "REDIS_URL", "SECRET_KEY"}
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_embedded_defaults_are_sqlite_wal_and_in_memory_layer() -> None:
    config = settings_in_subprocess(
        {"DEBUG": "1"},
        "[s.DATABASES['default']['ENGINE'], s.DATABASES['default']['OPTIONS'],"
        " s.CHANNEL_LAYERS['default']['BACKEND'], s.ALLOWED_HOSTS]",
    )
    engine, options, layer, hosts = config  # type: ignore[misc]
    assert engine == "django.db.backends.sqlite3"
    assert "journal_mode=WAL" in options["init_command"]
    assert options["transaction_mode"] == "IMMEDIATE"
    assert options["timeout"] >= 5
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert "127.0.0.1" in hosts


def test_database_and_redis_urls_select_scale_out_backends() -> None:
    engine, layer, hosts = settings_in_subprocess(  # type: ignore[misc]
        {
            "SECRET_KEY": "x" * 60,
            "DATABASE_URL": "postgres://user@db.example:5432/pipes",
            "REDIS_URL": "redis://cache.example:6379/1",
            "ALLOWED_HOSTS": "pipes.example.com, www.example.com",
        },
        "[s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default'], s.ALLOWED_HOSTS]",
    )
    assert engine == "django.db.backends.postgresql"
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert layer["CONFIG"]["hosts"][0]["address"] == "redis://cache.example:6379/1"
    assert hosts == ["pipes.example.com", "www.example.com"]


def test_secret_key_is_required_without_debug() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY"}}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings"},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_deploy_check_passes_with_production_environment() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG"}}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "SECRET_KEY": "a-long-random-production-secret-" + "k9" * 30,
            "ALLOWED_HOSTS": "pipes.example.com",
            "SECURE_SSL_REDIRECT": "1",
            "SECURE_HSTS_SECONDS": "31536000",
            "SECURE_HSTS_PRELOAD": "1",
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
async def test_asgi_application_serves_admin_login_over_http() -> None:
    from project.asgi import application

    communicator = HttpCommunicator(
        application, "GET", "/admin/login/", headers=[(b"host", b"127.0.0.1")]
    )
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 200
    assert b"csrfmiddlewaretoken" in response["body"]


async def test_an_idle_receive_on_the_redis_layer_outlives_the_client_read_timeout(
    redis_url: str,
) -> None:
    from channels_redis.core import RedisChannelLayer

    config = settings_in_subprocess(
        {"SECRET_KEY": "x" * 60, "REDIS_URL": redis_url}, "s.CHANNEL_LAYERS['default']['CONFIG']"
    )
    layer = RedisChannelLayer(**{**config, "prefix": f"idle-{uuid.uuid4().hex[:8]}"})  # type: ignore[dict-item]
    channel = await layer.new_channel()
    receive = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(7)  # idle longer than redis-py 8's default read timeout (5 s)
    assert not receive.done()
    await layer.send(channel, {"type": "run.progress"})
    assert (await asyncio.wait_for(receive, 5))["type"] == "run.progress"
    await layer.close_pools()
