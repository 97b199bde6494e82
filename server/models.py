"""Which models a gateway serves: names from the model repository, or paths, each behind one engine."""

from __future__ import annotations

import os
from pathlib import Path

from .engine.protocol import Engine

DEFAULT_MODELS = ("glotta-fr-tiny", "glotta-es-tiny")


class ModelNotFound(LookupError):
    pass


def model_repository() -> Path:
    """`$GLOTTA_MODEL_REPOSITORY`, else `./model_repository`, else the one beside the installed sources."""
    env = os.environ.get("GLOTTA_MODEL_REPOSITORY")
    if env:
        return Path(env)
    here = Path.cwd() / "model_repository"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "model_repository"


def resolve_model(spec: str, repository: Path | None = None) -> Path:
    """A model folder from a path or a name in the repository, with an error that lists what exists."""
    path = Path(spec)
    if (path / "glotta.json").is_file():
        return path
    repo = repository or model_repository()
    candidate = repo / spec
    if (candidate / "glotta.json").is_file():
        return candidate
    available = sorted(p.name for p in repo.glob("*") if (p / "glotta.json").is_file()) if repo.is_dir() else []
    raise ModelNotFound(f"model {spec!r} not found: not a model folder, and not in {repo} (available: {available})")


class ModelSet:
    """The engines one gateway serves, with the model used when a request names none."""

    def __init__(self, engines: list[Engine], default: str | None = None) -> None:
        if not engines:
            raise ValueError("no model to serve")
        self.engines = {e.name: e for e in engines}
        self.default = default or engines[0].name
        if self.default not in self.engines:
            raise ModelNotFound(f"default model {self.default!r} is not served (served: {list(self.engines)})")

    def guard(self, limits) -> None:
        """Put every engine behind the admission limit and timeouts (see limits.py); idempotent."""
        from .limits import GuardedEngine

        self.engines = {n: e if isinstance(e, GuardedEngine) else GuardedEngine(e, limits)
                        for n, e in self.engines.items()}

    def get(self, name: str | None) -> Engine:
        engine = self.engines.get(name or self.default)
        if engine is None:
            raise ModelNotFound(f"The model `{name}` does not exist. Served models: {sorted(self.engines)}")
        return engine

    async def start(self) -> None:
        for e in self.engines.values():
            await e.start()

    async def stop(self) -> None:
        for e in self.engines.values():
            await e.stop()

    def ready(self) -> bool:
        return all(e.ready() for e in self.engines.values())
