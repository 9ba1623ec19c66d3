"""The plain inventory app the sidecar protects: aiohttp + SQLite, no resilience logic.

It stands apart from the rest of the repository and never imports `proxy` or `policies`,
so it behaves like any third-party service placed behind the sidecar.
"""
