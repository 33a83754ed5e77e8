"""Runtimes and providers behind one interface.

Each adapter is one module with one error-mapping function and one retry
policy; the agent talks to all of them through :class:`cloud_adapters.runtime.Runtime`.
"""
