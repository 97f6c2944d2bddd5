"""The HTTP layer: thin handlers over the core services."""
