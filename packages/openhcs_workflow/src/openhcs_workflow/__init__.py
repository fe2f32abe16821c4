"""openhcs_workflow."""

__all__: list[str] = []
