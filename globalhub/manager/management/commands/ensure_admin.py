"""``python manage.py ensure_admin``: create the operator's superuser from the environment, once."""

from __future__ import annotations

import os
import secrets
from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create the superuser named by DJANGO_SUPERUSER_USERNAME with DJANGO_SUPERUSER_PASSWORD if it does not exist "
        "yet. With --generate-password and no password set, a random one is made and printed once."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--generate-password",
            action="store_true",
            help="when DJANGO_SUPERUSER_PASSWORD is unset, create the user with a random password and print it once",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "admin@localhost")
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(f"superuser {username!r} already exists")
            return
        generated = not password and options["generate_password"]
        if generated:
            password = secrets.token_urlsafe(18)
        if not password:
            raise CommandError("set DJANGO_SUPERUSER_PASSWORD (and optionally DJANGO_SUPERUSER_USERNAME)")
        users.objects.create_superuser(username=username, email=email, password=password)
        if generated:
            self.stdout.write(
                f"created superuser {username!r} with the generated password {password} "
                "(shown only now: change it in the admin, or set DJANGO_SUPERUSER_PASSWORD before the first start)"
            )
        else:
            self.stdout.write(f"created superuser {username!r}")
