"""The observability of the service, one component a module."""
