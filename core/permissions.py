"""Who may call a staff API: Django model permissions (DESIGN.md, "Trust: who may do what").

One DRF permission class for every staff endpoint. A view names what it needs and the class
checks it against the signed-in user's Django permissions (given directly, through groups, or
all of them for a superuser):

- ``permission_model``: the model an endpoint reads or changes. The HTTP method maps to the
  model's default permissions, as DRF's ``DjangoModelPermissions`` does but with the view
  permission for reads: GET/HEAD/OPTIONS -> ``view``, POST -> ``add``, PUT/PATCH -> ``change``,
  DELETE -> ``delete`` (``"<app_label>.<action>_<model_name>"``).
- ``method_permissions``: per method, the permissions to require instead (an upsert needs both
  ``add`` and ``change``; a refund is an ``add_refund`` on an order's URL).
- ``required_permissions``: permissions every method needs as well (the chat console's agent
  permission, the personal-data permission of the shopper endpoints).

Only active staff users pass; a method the view does not map is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import models
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

METHOD_ACTIONS: Mapping[str, str] = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


def model_permission(model: type[models.Model], action: str) -> str:
    """``"<app_label>.<action>_<model_name>"``, e.g. ``commerce.view_order``."""
    return f"{model._meta.app_label}.{action}_{model._meta.model_name}"


def view_permissions(view: Any, method: str) -> list[str] | None:
    """The permissions ``view`` requires for ``method``, or None when it does not allow it."""
    explicit: Mapping[str, Sequence[str]] = getattr(view, "method_permissions", {})
    model: type[models.Model] | None = getattr(view, "permission_model", None)
    if method in explicit:
        needed = list(explicit[method])
    elif model is not None and method in METHOD_ACTIONS:
        needed = [model_permission(model, METHOD_ACTIONS[method])]
    else:
        return None
    return needed + list(getattr(view, "required_permissions", ()))


class StaffModelPermissions(BasePermission):
    """Active staff holding the Django permissions the view names for the request's method."""

    message = "You do not have the permission this needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        needed = view_permissions(view, request.method or "")
        if needed is None:
            return False
        return bool(user.has_perms(needed))
