"""The operator's view of the manager's copy: hubs, what they reported, and the bookkeeping."""

from globalhub.manager.admin import base, bookkeeping, data, hubs, tasks, tokens

__all__ = ["base", "bookkeeping", "data", "hubs", "tasks", "tokens"]
