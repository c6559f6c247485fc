"""Cloud write path: validate edge messages, store them, pair sessions into charging events."""

from ingestor.decode import Decoded, Received, Rejected, RejectReason, decode
from ingestor.pairing import Applied, EventStatus, Flag, SessionEvent, apply, close_for_timeout
from ingestor.settings import IngestorSettings
from ingestor.store import BatchResult, Store, stream_event

__all__ = [
    "Applied",
    "BatchResult",
    "Decoded",
    "EventStatus",
    "Flag",
    "IngestorSettings",
    "Received",
    "RejectReason",
    "Rejected",
    "SessionEvent",
    "Store",
    "apply",
    "close_for_timeout",
    "decode",
    "stream_event",
]
