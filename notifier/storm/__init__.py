"""The source: reading a Storm Streaming Server cluster's viewer list (storm-api.md)."""

from ._retry import Backoff
from .client import Lookup, Poll, StormClient, create_session
from .decode import NO_DATA_GRADE, Page, Viewer

__all__ = [
    "NO_DATA_GRADE",
    "Backoff",
    "Lookup",
    "Page",
    "Poll",
    "StormClient",
    "Viewer",
    "create_session",
]
