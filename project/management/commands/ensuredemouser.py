"""Create the demo superuser once, with a generated password printed a single time."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a demo superuser with a generated password, unless a superuser exists."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write("A superuser exists already; its password was printed when created.")
            return
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(
                f"A user named {username!r} exists and is not a superuser: no demo superuser "
                "created (give another name with --username, or createsuperuser)."
            )
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        banner = "=" * 60
        self.stdout.write(
            self.style.SUCCESS(
                f"{banner}\nDemo superuser created (shown once, keep it):\n"
                f"  username: {username}\n  password: {password}\n{banner}"
            )
        )
