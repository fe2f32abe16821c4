"""reactive_services."""

__all__: list[str] = []
