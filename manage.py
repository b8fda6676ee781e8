#!/usr/bin/env python
import os
import sys

# Commands that read neither the database nor Redis: they never start the embedded servers,
# so `manage.py check` (or an IDE running it) leaves no daemon behind.
NO_DATA_STORES = frozenset(
    {
        "check",
        "collectstatic",
        "compilemessages",
        "diffsettings",
        "engagement_vapid_keys",
        "help",
        "makemessages",
        "makemigrations",
        "spectacular",
        "startapp",
        "startproject",
        "version",
    }
)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command not in NO_DATA_STORES and not command.startswith("-"):
        from config import embedded

        embedded.start_missing()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
