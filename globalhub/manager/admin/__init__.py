"""The operator's view of the manager's copy: hubs, what they reported, and the bookkeeping."""

from globalhub.manager.admin import base, bookkeeping, data, hubs

__all__ = ["base", "bookkeeping", "data", "hubs"]
