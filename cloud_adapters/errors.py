"""Errors raised by runtime adapters.

    RuntimeAdapterError            anything an adapter refuses or fails to do
    ├── TransientRuntimeError      worth retrying: engine restarting, socket reset, timeout
    └── PermanentRuntimeError      retrying will not help: image missing, bad spec
        └── InstanceNotFound       the runtime has no such instance (already gone)

Adapters map their library's exceptions onto this tree in one function each;
nothing above the adapter sees a docker or OS exception.
"""

from __future__ import annotations


class RuntimeAdapterError(Exception):
    """Base of every error a runtime adapter raises."""


class TransientRuntimeError(RuntimeAdapterError):
    """The call may succeed if retried later."""


class PermanentRuntimeError(RuntimeAdapterError):
    """The call will fail the same way if retried."""


class InstanceNotFound(PermanentRuntimeError):
    """The runtime does not know the instance (removed, never started)."""
