"""Policy language of the sidecar: model, loader, JSON Schema."""
