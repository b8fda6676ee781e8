"""Pins what ``chat.consumers.ChatSocket`` relies on inside Channels.

``ChatSocket`` replaces ``AsyncConsumer.__call__`` (Channels' ``await_many_dispatch`` loop) and
``AsyncConsumer.dispatch`` (which runs ``aclose_old_connections`` before every handler), and
still relies on the rest of ``AsyncWebsocketConsumer``. If a Channels upgrade changes what the
replaced methods do, or the names the rest of the class reads, these tests fail and say which
part to re-read; port the upstream change into ``ChatSocket`` and then update the pins here.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import channels
import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from chat.consumers import AgentConsumer, ChatSocket, ShopperConsumer

# ast.dump digests of the upstream methods ChatSocket replaces (channels 4.3.x). A different
# digest means upstream changed the method: read the new version, port what matters.
UPSTREAM_DIGESTS = {
    "AsyncConsumer.__call__": "32d2f5bc5a608d46",
    "AsyncConsumer.dispatch": "641964c7ad88d6d1",
}


def _tree(function: Callable[..., Any]) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(function)))


def _digest(function: Callable[..., Any]) -> str:
    # ast.dump ignores comments, docstring layout aside, and formatting.
    tree = _tree(function)
    node = tree.body[0]  # type: ignore[attr-defined]  # a module's first statement: the def
    if ast.get_docstring(node) is not None:
        node.body = node.body[1:]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def _self_attributes_set(function: Callable[..., Any]) -> set[str]:
    return {
        target.attr
        for node in ast.walk(_tree(function))
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    }


def _self_attributes_read(function: Callable[..., Any]) -> set[str]:
    return {
        node.attr
        for node in ast.walk(_tree(function))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, ast.Load)
    }


def _names(function: Callable[..., Any]) -> set[str]:
    return {node.id for node in ast.walk(_tree(function)) if isinstance(node, ast.Name)}


def _names_called(function: Callable[..., Any]) -> set[str]:
    return {
        node.func.id
        for node in ast.walk(_tree(function))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def test_channels_is_the_major_version_the_overrides_were_written_for():
    assert channels.__version__.split(".")[:2] == ["4", "3"], (
        f"channels {channels.__version__}: re-check ChatSocket.__call__/dispatch against it"
    )


@pytest.mark.parametrize("name", sorted(UPSTREAM_DIGESTS))
def test_the_replaced_upstream_methods_are_unchanged(name):
    owner, method = name.split(".")
    function = getattr({"AsyncConsumer": AsyncConsumer}[owner], method)

    assert _digest(function) == UPSTREAM_DIGESTS[name], (
        f"channels changed {name}: compare it with chat.consumers.ChatSocket.{method}"
    )


def test_call_keeps_the_asgi_signature_and_sets_what_upstream_sets():
    upstream = AsyncConsumer.__call__
    ours = ChatSocket.__call__

    assert list(inspect.signature(upstream).parameters) == ["self", "scope", "receive", "send"]
    assert list(inspect.signature(ours).parameters) == ["self", "scope", "receive", "send"]
    # What the rest of Channels (send, groups, websocket_*) reads, upstream's __call__ sets; ours
    # must set the same (and may add its own).
    expected = {"scope", "channel_layer", "channel_name", "channel_receive", "base_send"}
    assert _self_attributes_set(upstream) == expected
    assert expected <= _self_attributes_set(ours)
    # Upstream reads the layer through this class attribute, and so do we.
    assert AsyncConsumer.channel_layer_alias == DEFAULT_CHANNEL_LAYER
    assert "channel_layer_alias" in _self_attributes_read(ours)
    # Upstream ends the consumer on StopConsumer; ours catches the same exception class.
    assert "StopConsumer" in _names(upstream)
    assert "StopConsumer" in _names(ours)


def test_dispatch_differs_from_upstream_only_by_the_connection_upkeep():
    upstream_calls = _names_called(AsyncConsumer.dispatch)

    # Upstream looks the handler up by get_handler_name and closes old connections first (which
    # ChatSocket leaves to chat.threads.db); anything else it starts doing must be ported.
    assert upstream_calls == {
        "get_handler_name",
        "getattr",
        "aclose_old_connections",
        "handler",
        "ValueError",
    }, upstream_calls
    assert _names_called(ChatSocket.dispatch) == upstream_calls - {"aclose_old_connections"}
    assert list(inspect.signature(AsyncConsumer.dispatch).parameters) == ["self", "message"]
    assert list(inspect.signature(ChatSocket.dispatch).parameters) == ["self", "message"]


def test_handler_names_are_derived_as_the_overrides_expect():
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"
    assert get_handler_name({"type": "chat.ephemeral"}) == "chat_ephemeral"
    with pytest.raises(ValueError, match="leading underscore"):
        get_handler_name({"type": "_private"})


def test_the_inherited_websocket_methods_use_only_what_call_sets():
    set_by_call = _self_attributes_set(ChatSocket.__call__)
    # Methods inherited unchanged: they must not read an attribute upstream's __call__ would set
    # that ours does not.
    for method in (
        AsyncConsumer.send,
        AsyncWebsocketConsumer.websocket_connect,
        AsyncWebsocketConsumer.websocket_receive,
        AsyncWebsocketConsumer.websocket_disconnect,
        AsyncWebsocketConsumer.accept,
        AsyncWebsocketConsumer.close,
    ):
        upstream_call_attributes = _self_attributes_set(AsyncConsumer.__call__)
        missing = (_self_attributes_read(method) & upstream_call_attributes) - set_by_call
        assert not missing, f"{method.__qualname__} reads {missing}, which ChatSocket never sets"
    assert "base_send" in _self_attributes_read(AsyncConsumer.send)


def test_disconnect_still_ends_the_consumer_with_stop_consumer():
    assert "StopConsumer" in _names(AsyncWebsocketConsumer.websocket_disconnect)
    assert issubclass(StopConsumer, Exception)


def test_the_consumers_inherit_the_websocket_methods_they_call():
    for consumer in (ShopperConsumer, AgentConsumer):
        for name in ("accept", "close", "send", "websocket_connect", "websocket_disconnect"):
            assert getattr(consumer, name) is getattr(AsyncWebsocketConsumer, name), name
        assert consumer.__call__ is ChatSocket.__call__
        assert consumer.dispatch is ChatSocket.dispatch
    assert list(inspect.signature(AsyncWebsocketConsumer.send).parameters) == [
        "self",
        "text_data",
        "bytes_data",
        "close",
    ]
    assert list(inspect.signature(AsyncWebsocketConsumer.close).parameters) == [
        "self",
        "code",
        "reason",
    ]
