"""Synchronous SQL, one module per table family; each function takes an open connection.

Functions here run inside `Database.run` (a worker thread) and raise `ApiError` for the
outcomes a client must see (missing rows, conflicts).
"""
