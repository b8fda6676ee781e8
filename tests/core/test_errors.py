import pytest
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from core.exceptions import Conflict

pytestmark = pytest.mark.django_db


class _Input(serializers.Serializer):
    quantity = serializers.IntegerField(min_value=1)


class _View(APIView):
    authentication_classes = ()
    permission_classes = ()

    def post(self, request):
        if request.data.get("conflict"):
            raise Conflict("order 7 is already being refunded", extra={"order": 7})
        _Input(data=request.data).is_valid(raise_exception=True)
        return Response({"ok": True})


def _post(data):
    request = APIRequestFactory().post("/api/x/", data, format="json")
    return _View.as_view()(request)


def test_validation_errors_name_the_field():
    response = _post({"quantity": 0})

    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid"
    assert (
        response.data["error"]["message"]
        == "quantity: Ensure this value is greater than or equal to 1."
    )
    assert response.data["error"]["detail"] == {
        "quantity": ["Ensure this value is greater than or equal to 1."]
    }


def test_application_errors_keep_their_status_code_and_extra():
    response = _post({"conflict": True})

    assert response.status_code == 409
    assert response.data == {
        "error": {
            "code": "conflict",
            "message": "order 7 is already being refunded",
            "detail": {"order": 7},
        }
    }


def test_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/no-such-thing/")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Nothing is at this address."}
    }


def test_malformed_json_is_a_400_with_a_json_error():
    request = APIRequestFactory().post("/api/x/", b"{not json", content_type="application/json")

    response = _View.as_view()(request)

    assert response.status_code == 400
    assert response.data["error"]["code"] == "parse_error"
