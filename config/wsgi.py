"""WSGI entry point (the ASGI one in ``asgi.py`` is what Patron serves with)."""

import os

from django.core.wsgi import get_wsgi_application

from config import embedded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A serving process starts the embedded servers it needs (a no-op with both URLs set).
embedded.start_missing()

application = get_wsgi_application()
