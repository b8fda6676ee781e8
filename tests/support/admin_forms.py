"""What a browser would POST back from an admin change page: every field as the page shows it,
the inline formsets' management forms included, so a test can change one value and submit."""

from __future__ import annotations

from typing import Any


def _put(data: dict[str, Any], form: Any) -> None:
    for name in form.fields:
        bound = form[name]
        value = bound.value()
        if value is None or value is False:
            continue
        if value is True:
            value = "on"
        data[bound.html_name] = value


def change_form_data(response: Any) -> dict[str, Any]:
    """The POST body of the change form rendered in ``response`` (a GET of the change page)."""
    data: dict[str, Any] = {}
    _put(data, response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        _put(data, formset.management_form)
        for form in formset.forms:
            _put(data, form)
    return data
