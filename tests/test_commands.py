"""The smaller management commands: pipelineworker's options, the demo project's ensuredemouser."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["0", "-2"])
def test_pipelineworker_refuses_a_concurrency_below_one(value: str) -> None:
    with pytest.raises(CommandError, match="--concurrency must be 1 or more") as raised:
        call_command("pipelineworker", "--concurrency", value, stdout=io.StringIO())
    assert raised.value.returncode == 2


def test_ensuredemouser_leaves_a_user_of_that_name_alone() -> None:
    user = get_user_model().objects.create_user("admin", password="x")
    out = io.StringIO()
    call_command("ensuredemouser", stdout=out)  # make run goes on

    assert "is not a superuser" in out.getvalue()
    assert "password:" not in out.getvalue()
    user.refresh_from_db()
    assert not user.is_superuser and user.check_password("x")


def test_ensuredemouser_prints_the_password_once() -> None:
    first, second = io.StringIO(), io.StringIO()
    call_command("ensuredemouser", stdout=first)
    call_command("ensuredemouser", stdout=second)

    assert "password:" in first.getvalue()
    assert "password:" not in second.getvalue()
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
