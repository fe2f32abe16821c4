"""zmqruntime."""

__all__: list[str] = []
