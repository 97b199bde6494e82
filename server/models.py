"""The models a gateway serves, each behind one engine (folders are found by glotta.modeling.model_folder)."""

from __future__ import annotations

from glotta.core.errors import not_found

from .engine.interface import Engine

DEFAULT_MODELS = ("glotta-fr-tiny", "glotta-es-tiny")


class ModelSet:
    """The engines one gateway serves, with the model used when a request names none."""

    def __init__(self, engines: list[Engine], default: str | None = None) -> None:
        if not engines:
            raise ValueError("no model to serve")
        self.engines = {e.name: e for e in engines}
        self.default = default or engines[0].name
        if self.default not in self.engines:
            raise not_found(f"default model {self.default!r} is not served (served: {list(self.engines)})", "model")

    def guard(self, limits) -> None:
        """Put every engine behind the admission limit and timeouts (see limits.py); idempotent."""
        from .limits import GuardedEngine

        self.engines = {n: e if isinstance(e, GuardedEngine) else GuardedEngine(e, limits)
                        for n, e in self.engines.items()}

    def get(self, name: str | None) -> Engine:
        engine = self.engines.get(name or self.default)
        if engine is None:
            raise not_found(f"The model `{name}` does not exist. Served models: {sorted(self.engines)}", "model")
        return engine

    async def start(self) -> None:
        for e in self.engines.values():
            await e.start()

    async def stop(self) -> None:
        for e in self.engines.values():
            await e.stop()

    def ready(self) -> bool:
        return all(e.ready() for e in self.engines.values())
