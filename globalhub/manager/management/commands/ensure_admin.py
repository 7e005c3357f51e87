"""``python manage.py ensure_admin``: create the operator's superuser from the environment, once."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the superuser named by DJANGO_SUPERUSER_USERNAME / _PASSWORD if it does not exist yet."

    def handle(self, *args: Any, **options: Any) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "admin@localhost")
        if not password:
            raise CommandError("set DJANGO_SUPERUSER_PASSWORD (and optionally DJANGO_SUPERUSER_USERNAME)")
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(f"superuser {username!r} already exists")
            return
        users.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(f"created superuser {username!r}")
