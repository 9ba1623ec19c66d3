"""`server.workers > 1`: a supervisor and its workers acting as one sidecar (CONTRACT 12).

The supervisor (the parent process) forks the workers, restarts one that dies, relays
SIGHUP, drains all on SIGTERM, owns the authoritative circuit breakers and adds up the
workers' metrics. Each worker talks to it over one socketpair (`channel`). See the
"Workers" section of docs/architecture.md.
"""
