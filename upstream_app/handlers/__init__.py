"""HTTP handlers, one module per resource, each exposing a `routes` table."""
