"""The scheduler's parts; :mod:`federation.scheduler` is the public face."""
