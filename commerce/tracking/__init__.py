"""Ingestion of Segment-compatible tracking calls: decode, validate, resolve shoppers, store.

The path a batch takes is built for throughput: one ``orjson`` parse (``core.parsers``, with its
depth and number limits), one pass of plain-Python validation that sets invalid calls aside by
index (a batch stores its valid calls and reports the others, as Segment's API does; a request
whose every call is invalid stores nothing), identity resolution with a constant number of
queries per batch, and one
``COPY`` of the new rows straight into ``commerce_event``. A replayed ``messageId`` makes the
``COPY`` fail on the unique constraint; the batch is then stored with
``INSERT ... ON CONFLICT DO NOTHING`` instead, so duplicates are accepted and stored once.
The ids of new events go to the ``events_process`` task after commit.

The package (this module re-exports every public name, so callers keep
``from commerce import tracking; tracking.events_ingest(...)``):

- ``decoding``: the call and result types, payload decoding, write-key authentication;
- ``validation``: fields, timestamps and identity proofs of each call;
- ``identity``: shoppers and aliases for a batch, with a constant number of queries;
- ``storage``: ``COPY`` into ``commerce_event``, the duplicate fallback, retries.
"""

from commerce.tracking.decoding import (
    CALL_TYPES,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    Call,
    IngestResult,
    payload_decode,
)
from commerce.tracking.storage import events_ingest
from commerce.tracking.validation import (
    PROOF_CONTEXT_KEYS,
    PROOF_TRAIT_KEYS,
    CallError,
    calls_validate,
    calls_verify,
)

__all__ = [
    "CALL_TYPES",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "PROOF_CONTEXT_KEYS",
    "PROOF_TRAIT_KEYS",
    "Call",
    "CallError",
    "IngestResult",
    "calls_validate",
    "calls_verify",
    "events_ingest",
    "payload_decode",
]
