"""The federation controller and the pieces it shares with the agent.

Keep this package's import light: the agent imports ``federation.wire`` and
``federation.bus`` on a Raspberry Pi and must not pull in aiohttp or the store.
"""
