"""Print a new VAPID key pair for web push (set them as PATRON_VAPID_* in the environment)."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management.base import BaseCommand


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def generate_keys() -> tuple[str, str]:
    """(private, public): the raw P-256 private value and the uncompressed public point,
    base64url without padding, as pywebpush and the browser's ``applicationServerKey`` take."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _b64(private), _b64(public)


class Command(BaseCommand):
    help = "Generate a VAPID key pair for web push."

    def handle(self, *args: Any, **options: Any) -> None:
        private, public = generate_keys()
        self.stdout.write(f"PATRON_VAPID_PRIVATE_KEY={private}")
        self.stdout.write(f"PATRON_VAPID_PUBLIC_KEY={public}")
