"""Email: straight SMTP with a commit before the end-of-data, or any Django email backend.

With Django's SMTP backend configured (``EMAIL_URL=smtp://...``), :class:`SMTPChannel` speaks
SMTP itself over one connection per batch, so that it can call ``handing()`` after the
message body and before the final ``.``: an SMTP server accepts a message only at that dot,
and a client that dies before sending it leaves nothing delivered. Every other backend
(django-anymail's ESPs, the file and console backends, locmem in tests) goes through
:class:`DjangoEmailChannel`, which hands over at the backend call.

Neither SMTP nor the ESPs Anymail speaks to offer a lookup by our Message-ID or an
idempotency key, so email is not ``idempotent``: a message a dead worker possibly handed over
is never sent again (see ``services.outbox_sweep``).
"""

from __future__ import annotations

import quopri
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend

from engagement.channels.base import (
    ChannelBackend,
    DeliveryError,
    GroupHanding,
    Handing,
    Outbound,
    Result,
)

_LEADING_DOT = re.compile(rb"(?m)^\.")


def build_email(outbound: Outbound) -> EmailMultiAlternatives:
    """The MIME message: plain-text and HTML parts, our Message-ID and List-Unsubscribe headers."""
    email = EmailMultiAlternatives(
        subject=outbound.subject,
        body=outbound.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[outbound.recipient],
        headers={"Message-ID": outbound.idempotency_key, **outbound.headers},
    )
    if outbound.html:
        email.attach_alternative(outbound.html, "text/html")
    return email


def _header(value: str) -> str:
    if value.isascii():
        return " ".join(value.split())
    return Header(value, "utf-8").encode()


def _address(value: str) -> str:
    name, address = parseaddr(value)
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))
    return f"{Header(name, 'utf-8').encode()} <{address}>"


def _part(content_type: str, body: str) -> bytes:
    encoded = quopri.encodestring(body.replace("\r\n", "\n").encode()).replace(b"\n", b"\r\n")
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + encoded


def compose(outbound: Outbound, *, from_email: str) -> bytes:
    """The RFC 5322 message as bytes (CRLF lines): headers, then text and HTML alternatives.

    A direct writer for the SMTP channel, several times faster than the email package's
    generator; bodies are quoted-printable, so every line stays under 78 characters.
    """
    headers = {
        "From": _address(from_email),
        "To": _address(outbound.recipient),
        "Subject": _header(outbound.subject),
        "Date": formatdate(localtime=False, usegmt=True),
        "Message-ID": outbound.idempotency_key,
        "MIME-Version": "1.0",
        **{key: _header(value) for key, value in outbound.headers.items()},
    }
    head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    if not outbound.html:
        return head.encode() + _part("text/plain", outbound.text)
    boundary = f"=_patron_{outbound.delivery_id.replace('-', '')}"
    return b"".join(
        [
            head.encode(),
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
            f"--{boundary}\r\n".encode(),
            _part("text/plain", outbound.text),
            f"\r\n--{boundary}\r\n".encode(),
            _part("text/html", outbound.html),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )


class SMTPChannel(ChannelBackend):
    """SMTP over ``group_size`` connections, pipelined across them.

    For a group of messages, each on its own connection: MAIL, RCPT, DATA and the body go out
    on every connection (replies read after each round), then one commit records the whole
    group as handed over, then the end-of-data dots go out and the replies are read. A worker
    killed before that commit leaves only unfinished DATA, which servers discard: the messages
    are sent again. One killed after it leaves messages possibly accepted, never sent again.
    """

    idempotent = False

    def __init__(self) -> None:
        self.group_size = max(1, settings.PATRON_SMTP_CONNECTIONS)
        self.connections: list[smtplib.SMTP | None] = []
        self.sender = smtplib.quoteaddr(parseaddr(settings.DEFAULT_FROM_EMAIL)[1])

    def _connect(self) -> smtplib.SMTP:
        timeout = getattr(settings, "EMAIL_TIMEOUT", None) or 30
        try:
            if getattr(settings, "EMAIL_USE_SSL", False):
                connection: smtplib.SMTP = smtplib.SMTP_SSL(
                    settings.EMAIL_HOST,
                    settings.EMAIL_PORT,
                    timeout=timeout,
                    context=ssl.create_default_context(),
                )
            else:
                connection = smtplib.SMTP(settings.EMAIL_HOST, settings.EMAIL_PORT, timeout=timeout)
                if getattr(settings, "EMAIL_USE_TLS", False):
                    connection.starttls(context=ssl.create_default_context())
            if settings.EMAIL_HOST_USER:
                connection.login(settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD)
            connection.ehlo_or_helo_if_needed()
            if connection.sock is not None:
                # The body and the end-of-data dot go out as two writes (a commit between
                # them); without this, Nagle's algorithm holds the dot for a delayed ACK.
                connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"cannot connect to SMTP server: {exc}", transient=True) from exc
        return connection

    def _ensure(self, count: int) -> list[smtplib.SMTP]:
        while len(self.connections) < count:
            self.connections.append(None)
        for index in range(count):
            if self.connections[index] is None:
                self.connections[index] = self._connect()
        return [c for c in self.connections[:count] if c is not None]

    def open(self) -> None:
        self._ensure(1)

    def close(self) -> None:
        connections, self.connections = self.connections, []
        for connection in connections:
            if connection is None:
                continue
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    def _abandon(self, index: int) -> None:
        """Drop a connection mid-transaction: the server discards an unfinished DATA."""
        connection, self.connections[index] = self.connections[index], None
        if connection is not None:
            connection.close()

    def _reset(self, index: int) -> None:
        connection = self.connections[index]
        try:
            if connection is not None:
                connection.rset()
        except (smtplib.SMTPException, OSError):
            self._abandon(index)

    @staticmethod
    def _reply_error(code: int, reply: bytes, what: str) -> DeliveryError:
        transient = 400 <= code < 500 or code == -1
        return DeliveryError(
            f"{what}: {code} {reply.decode(errors='replace')}", transient=transient
        )

    def _data(self, outbound: Outbound) -> bytes:
        data = compose(outbound, from_email=settings.DEFAULT_FROM_EMAIL)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        return _LEADING_DOT.sub(b"..", data)

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        def group_handing(group: Sequence[Outbound]) -> set[int]:
            handing()
            return {o.message_id for o in group}

        [result] = self.send_many([outbound], handing=group_handing)
        if isinstance(result, DeliveryError):
            raise result
        assert result is not None
        return result

    def send_many(self, outbounds: Sequence[Outbound], *, handing: GroupHanding) -> list[Result]:
        count = len(outbounds)
        try:
            connections = self._ensure(count)
        except DeliveryError as error:
            return [error] * count
        results: dict[int, Result] = {}

        def broken(index: int, exc: Exception, what: str, *, maybe: bool = False) -> None:
            self._abandon(index)
            results[index] = DeliveryError(f"{what}: {exc}", transient=True, maybe_delivered=maybe)

        def round_trip(
            indices: Sequence[int], command: Callable[[int], None], ok: tuple[int, ...], what: str
        ) -> list[int]:
            written = []
            for i in indices:
                try:
                    command(i)
                    written.append(i)
                except (smtplib.SMTPException, OSError) as exc:
                    broken(i, exc, what)
            survivors = []
            for i in written:
                try:
                    code, reply = connections[i].getreply()
                except (smtplib.SMTPException, OSError) as exc:
                    broken(i, exc, what)
                    continue
                if code in ok:
                    survivors.append(i)
                else:
                    results[i] = self._reply_error(code, reply, what)
                    self._reset(i)
            return survivors

        ready = round_trip(
            range(count),
            lambda i: connections[i].putcmd("mail", f"FROM:{self.sender}"),
            (250,),
            "MAIL FROM refused",
        )
        ready = round_trip(
            ready,
            lambda i: connections[i].putcmd(
                "rcpt", f"TO:{smtplib.quoteaddr(outbounds[i].recipient)}"
            ),
            (250, 251),
            "recipient refused",
        )
        ready = round_trip(ready, lambda i: connections[i].putcmd("data"), (354,), "DATA refused")
        bodied = []
        for i in ready:
            try:
                connections[i].send(self._data(outbounds[i]))
                bodied.append(i)
            except (smtplib.SMTPException, OSError) as exc:
                broken(i, exc, "SMTP error before hand-over")
        try:
            ours = handing([outbounds[i] for i in bodied]) if bodied else set()
        except BaseException:
            for i in bodied:
                self._abandon(i)
            raise
        dotted = []
        for i in bodied:
            if outbounds[i].message_id not in ours:
                self._abandon(i)
                results[i] = None
                continue
            try:
                connections[i].send(b".\r\n")
                dotted.append(i)
            except (smtplib.SMTPException, OSError) as exc:
                broken(i, exc, "connection lost at end of data", maybe=True)
        for i in dotted:
            try:
                code, reply = connections[i].getreply()
            except (smtplib.SMTPException, OSError) as exc:
                broken(i, exc, "connection lost after end of data", maybe=True)
                continue
            if code == 250:
                results[i] = reply.decode(errors="replace")[:255] or outbounds[i].idempotency_key
            else:
                results[i] = self._reply_error(code, reply, "message refused")
        return [results[i] for i in range(count)]


class DjangoEmailChannel(ChannelBackend):
    """Any Django email backend; django-anymail's report the ESP's message id."""

    idempotent = False

    def __init__(self) -> None:
        self.connection: BaseEmailBackend | None = None

    def open(self) -> None:
        if self.connection is None:
            self.connection = get_connection(fail_silently=False)
            self.connection.open()

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        self.open()
        email = build_email(outbound)
        email.connection = self.connection
        handing()
        try:
            email.send()
        except Exception as exc:  # backends raise anything; classify what we can
            status = getattr(exc, "status_code", None)
            if isinstance(status, int):
                transient = status >= 500 or status == 429
                raise DeliveryError(f"ESP refused: {exc}", transient=transient) from exc
            raise DeliveryError(
                f"email backend failed: {exc}", transient=True, maybe_delivered=True
            ) from exc
        status = getattr(email, "anymail_status", None)
        provider_id = getattr(status, "message_id", None) if status is not None else None
        return str(provider_id or outbound.idempotency_key)[:255]


def email_channel() -> ChannelBackend:
    if settings.EMAIL_BACKEND == "django.core.mail.backends.smtp.EmailBackend":
        return SMTPChannel()
    return DjangoEmailChannel()
