"""The engine: one loaded model served batch by batch (``core``), with the batching policy
(``batcher``), one model call (``calls``) and result encoding (``encoding``) as units of their
own."""

from inference.engine.core import Engine, EngineStats

__all__ = ["Engine", "EngineStats"]
