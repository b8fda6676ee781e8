"""Verified identity on the tracking API (issue #8, section 1).

A browser (public) write key may say any ``userId``; it counts only with its proof,
``hex(HMAC-SHA256(identity secret, userId))``, carried in ``context.userHash`` (or an identify
trait ``user_hash``). Without it the call is recorded on the anonymous shopper only: no merge
into a known customer, no change to a known customer's contact data or consent. An anonymous
id that belongs to a known customer does not carry the customer to whoever sends it next.
Server-side keys stay trusted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from commerce.models import Event, Shopper, ShopperAlias, WriteKey
from tests.commerce.tracking_support import SENT_AT, post, track
from tests.support.identity import user_hash

pytestmark = pytest.mark.django_db

CONTACT = ("email", "phone", "first_name", "last_name", "email_consent", "sms_consent")


@pytest.fixture
def browser(identity_secret: str) -> str:
    return WriteKey.objects.create(name="shop pages").key


@pytest.fixture
def server(identity_secret: str) -> str:
    return WriteKey.objects.create(name="shop backend", server_side=True).key


@pytest.fixture
def ana(identity_secret: str) -> Shopper:
    """A known customer, logged in earlier on her own browser ``anon-ana``."""
    shopper = Shopper.objects.create(
        customer_id="c-ana",
        email="ana@example.com",
        phone="+371 2000 0000",
        first_name="Ana",
        last_name="Berzina",
        email_consent=True,
        sms_consent=True,
    )
    ShopperAlias.objects.create(anonymous_id="anon-ana", shopper=shopper)
    return shopper


def _contact(shopper: Shopper) -> tuple[Any, ...]:
    shopper.refresh_from_db()
    return tuple(getattr(shopper, field) for field in CONTACT)


ANA_CONTACT = ("ana@example.com", "+371 2000 0000", "Ana", "Berzina", True, True)


def _send(client: Any, capture: Any, key: str, *calls: dict[str, Any]) -> Any:
    with capture(execute=True):  # runs the processing task (Celery is eager in unit tests)
        return post(client, "/v1/batch", {"batch": list(calls), "sentAt": SENT_AT}, key=key)


def _forged_identify(message_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": message_id,
        "userId": "c-ana",
        "anonymousId": "anon-evil",
        "traits": {
            "email": "evil@example.net",
            "phone": "+1 555 0100",
            "firstName": "Eve",
            "lastName": "Mallory",
            "email_consent": False,
            "smsConsent": False,
        },
        **extra,
    }


@pytest.mark.parametrize(
    "proof",
    [
        {},
        {"context": {"userHash": "0" * 64}},
        {"context": {"userHash": user_hash("c-ana", "another-stores-secret")}},
        {"context": {"userHash": user_hash("c-other")}},
    ],
    ids=["no-proof", "zeros", "other-secret", "other-customer"],
)
def test_a_browser_identify_without_valid_proof_never_touches_the_customer(
    client, django_capture_on_commit_callbacks, browser, ana, proof
):
    # When someone with the public key claims to be Ana from their own browser,
    response = _send(
        client, django_capture_on_commit_callbacks, browser, _forged_identify("f-1", **proof)
    )

    # then the call is accepted but recorded on their anonymous shopper only:
    assert response.status_code == 200, response.content
    event = Event.objects.get(message_id="f-1")
    evil = ShopperAlias.objects.get(anonymous_id="anon-evil").shopper
    assert (event.shopper_id, event.user_id) == (evil.pk, "")
    assert evil.pk != ana.pk
    assert (evil.customer_id, evil.merged_into_id) == (None, None)
    # Ana's contact data and consent are unchanged, nothing was merged into her,
    assert _contact(ana) == ANA_CONTACT
    assert ana.merged_from.count() == 0
    assert list(ana.aliases.values_list("anonymous_id", flat=True)) == ["anon-ana"]
    # and the traits landed on the anonymous shopper (consent never, from a browser).
    evil.refresh_from_db()
    assert (evil.email, evil.first_name, evil.email_consent) == ("evil@example.net", "Eve", False)
    assert Shopper.objects.count() == 2


def test_a_browser_cannot_change_a_customer_through_her_anonymous_id(
    client, django_capture_on_commit_callbacks, browser, ana
):
    # When an identify without userId arrives for Ana's anonymous id (the next person on her
    # computer after she logged out, or anyone who learnt the id),
    response = _send(
        client,
        django_capture_on_commit_callbacks,
        browser,
        {
            "type": "identify",
            "messageId": "n-1",
            "anonymousId": "anon-ana",
            "traits": {"email": "next@example.net", "name": "Next Person"},
        },
        track("n-2", anonymousId="anon-ana"),
    )

    # then the id now belongs to a new anonymous shopper that holds the calls and traits,
    assert response.status_code == 200, response.content
    newcomer = ShopperAlias.objects.get(anonymous_id="anon-ana").shopper
    assert newcomer.pk != ana.pk
    assert newcomer.customer_id is None
    assert set(Event.objects.values_list("shopper_id", flat=True)) == {newcomer.pk}
    assert (newcomer.email, newcomer.first_name) == ("next@example.net", "Next")
    # and Ana is untouched.
    assert _contact(ana) == ANA_CONTACT
    assert ana.events.count() == 0


def test_logging_in_again_with_proof_brings_the_browser_back_to_the_customer(
    client, django_capture_on_commit_callbacks, browser, ana
):
    # Given Ana's browser was used anonymously after her logout,
    _send(client, django_capture_on_commit_callbacks, browser, track("a-1", anonymousId="anon-ana"))
    newcomer = ShopperAlias.objects.get(anonymous_id="anon-ana").shopper

    # when she logs in again and the page sends her proof,
    response = _send(
        client,
        django_capture_on_commit_callbacks,
        browser,
        {
            "type": "identify",
            "messageId": "a-2",
            "userId": "c-ana",
            "anonymousId": "anon-ana",
            "context": {"userHash": user_hash("c-ana")},
        },
    )

    # then the anonymous visit is folded into her, as any login does.
    assert response.status_code == 200, response.content
    newcomer.refresh_from_db()
    assert newcomer.merged_into_id == ana.pk
    assert ShopperAlias.objects.get(anonymous_id="anon-ana").shopper_id == ana.pk
    assert sorted(Event.objects.values_list("message_id", "shopper_id")) == [
        ("a-1", ana.pk),
        ("a-2", ana.pk),
    ]


@pytest.mark.parametrize(
    "where",
    ["context.userHash", "context.user_hash", "traits.user_hash", "context.traits.user_hash"],
)
def test_with_valid_proof_a_browser_identify_logs_the_customer_in(
    client, django_capture_on_commit_callbacks, browser, ana, where
):
    proof = user_hash("c-ana")
    call: dict[str, Any] = {
        "type": "identify",
        "messageId": "ok-1",
        "userId": "c-ana",
        "anonymousId": "anon-laptop",
        "traits": {"phone": "+371 2999 9999", "plan": "gold", "email_consent": False},
    }
    section, key = where.split(".", 1)
    if section == "traits":
        call["traits"][key] = proof
    elif key.startswith("traits."):
        call["context"] = {"traits": {key.removeprefix("traits."): proof, "locale": "lv"}}
    else:
        call["context"] = {key: proof}
    # Given the laptop browsed anonymously first,
    _send(
        client, django_capture_on_commit_callbacks, browser, track("v-1", anonymousId="anon-laptop")
    )
    visitor = ShopperAlias.objects.get(anonymous_id="anon-laptop").shopper

    response = _send(client, django_capture_on_commit_callbacks, browser, call)

    # then the visitor is merged into Ana and her own traits change, consent excepted,
    assert response.status_code == 200, response.content
    visitor.refresh_from_db()
    assert visitor.merged_into_id == ana.pk
    assert Event.objects.get(message_id="ok-1").user_id == "c-ana"
    ana.refresh_from_db()
    assert (ana.phone, ana.traits.get("plan"), ana.email_consent) == (
        "+371 2999 9999",
        "gold",
        True,
    )
    # and the proof itself is stored nowhere.
    event = Event.objects.get(message_id="ok-1")
    assert proof not in str(event.properties) + str(event.context) + str(ana.traits)


def test_one_proof_in_a_request_covers_that_customers_other_calls(
    client, django_capture_on_commit_callbacks, browser, ana
):
    response = _send(
        client,
        django_capture_on_commit_callbacks,
        browser,
        {
            "type": "identify",
            "messageId": "b-1",
            "userId": "c-ana",
            "anonymousId": "anon-ana",
            "traits": {"user_hash": user_hash("c-ana")},
        },
        track("b-2", anonymousId="anon-ana", userId="c-ana"),
        track("b-3", anonymousId="anon-x", userId="c-bob"),  # Bob's is not proven
    )

    assert response.status_code == 200, response.content
    stored = dict(Event.objects.values_list("message_id", "user_id"))
    assert stored == {"b-1": "c-ana", "b-2": "c-ana", "b-3": ""}
    assert not Shopper.objects.filter(customer_id="c-bob").exists()


def test_an_unproven_user_id_without_anonymous_id_is_refused_and_nothing_is_stored(
    client, django_capture_on_commit_callbacks, browser, ana
):
    calls = [
        track("r-1", anonymousId="anon-fine"),
        {"type": "identify", "messageId": "r-2", "userId": "c-ana", "traits": {"email": "x@y.z"}},
    ]
    response = _send(client, django_capture_on_commit_callbacks, browser, *calls)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "identity_unverified"
    assert response.json()["error"]["detail"] == {"index": 1}
    assert Event.objects.count() == 0
    assert (Shopper.objects.count(), ShopperAlias.objects.count()) == (1, 1)
    assert _contact(ana) == ANA_CONTACT


def test_a_browser_alias_never_merges_another_customer(
    client, django_capture_on_commit_callbacks, browser, ana
):
    mallory = Shopper.objects.create(customer_id="c-mallory", email="m@example.net")

    # Mallory, proven, aliases Ana's customer id to her own account; then without proof.
    response = _send(
        client,
        django_capture_on_commit_callbacks,
        browser,
        {
            "type": "alias",
            "messageId": "x-1",
            "previousId": "c-ana",
            "userId": "c-mallory",
            "anonymousId": "anon-m",
            "context": {"userHash": user_hash("c-mallory")},
        },
        {
            "type": "alias",
            "messageId": "x-2",
            "previousId": "anon-ana",
            "userId": "c-ana",
            "anonymousId": "anon-m",
        },
    )

    assert response.status_code == 200, response.content
    ana.refresh_from_db()
    mallory.refresh_from_db()
    assert (ana.merged_into_id, mallory.merged_into_id) == (None, None)
    assert ShopperAlias.objects.get(anonymous_id="anon-ana").shopper_id == ana.pk
    assert _contact(ana) == ANA_CONTACT


def test_a_server_side_key_is_trusted_without_proof(
    client, django_capture_on_commit_callbacks, server, ana
):
    response = _send(
        client,
        django_capture_on_commit_callbacks,
        server,
        {
            "type": "identify",
            "messageId": "s-1",
            "userId": "c-ana",
            "anonymousId": "anon-checkout",
            "traits": {"email": "ana@new.example", "email_consent": False},
        },
        track("s-2", anonymousId="anon-ana"),
    )

    assert response.status_code == 200, response.content
    ana.refresh_from_db()
    assert (ana.email, ana.email_consent) == ("ana@new.example", False)
    assert ShopperAlias.objects.get(anonymous_id="anon-checkout").shopper_id == ana.pk
    # An anonymous call for her device from the store's servers stays hers.
    assert Event.objects.get(message_id="s-2").shopper_id == ana.pk


def test_browser_batches_cost_the_same_number_of_queries_whatever_their_size(
    client, browser, django_assert_max_num_queries
):
    # Given seven customers known with their devices,
    known = [
        {
            "type": "identify",
            "messageId": f"k-{u}",
            "userId": f"c-{u}",
            "anonymousId": f"anon-{u}",
            "context": {"userHash": user_hash(f"c-{u}")},
        }
        for u in range(7)
    ]
    assert post(client, "/v1/batch", {"batch": known}, key=browser).status_code == 200

    def batch(size: int, offset: int) -> dict[str, Any]:
        calls: list[dict[str, Any]] = []
        for i in range(size):
            n, user = offset + i, i % 7
            if i % 3 == 0:  # proven, on the customer's device
                calls.append(
                    track(
                        f"t-{n}",
                        anonymousId=f"anon-{user}",
                        userId=f"c-{user}",
                        context={"userHash": user_hash(f"c-{user}")},
                    )
                )
            elif i % 3 == 1:  # a claim without proof from a newcomer
                calls.append(track(f"u-{n}", anonymousId=f"new-{n}", userId=f"c-x{user}"))
            else:
                calls.append({"type": "page", "messageId": f"p-{n}", "anonymousId": f"new-{n}"})
        return {"batch": calls, "sentAt": SENT_AT}

    # when a batch of 12 and one of 300 calls arrive,
    with django_assert_max_num_queries(14) as small:
        assert post(client, "/v1/batch", batch(12, 1000), key=browser).status_code == 200
    with django_assert_max_num_queries(14) as large:
        assert post(client, "/v1/batch", batch(300, 2000), key=browser).status_code == 200

    # then the large one needs no more queries, and nobody was merged.
    assert len(large.captured_queries) == len(small.captured_queries)
    assert Shopper.objects.filter(merged_into__isnull=False).count() == 0
    assert Event.objects.filter(user_id="").count() == 2 * (4 + 100)


def test_timestamps_are_unaffected_by_verification(client, browser, ana):
    # A proven call keeps everything else the API stores.
    body = {
        "userId": "c-ana",
        "anonymousId": "anon-ana",
        "event": "Product Viewed",
        "messageId": "ts-1",
        "timestamp": "2024-05-01T10:00:00Z",
        "context": {"userHash": user_hash("c-ana"), "locale": "lv-LV"},
    }
    assert post(client, "/v1/track", body, key=browser).status_code == 200
    event = Event.objects.get()
    assert (event.user_id, event.shopper_id, event.context) == (
        "c-ana",
        ana.pk,
        {"locale": "lv-LV"},
    )
    assert event.timestamp == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
