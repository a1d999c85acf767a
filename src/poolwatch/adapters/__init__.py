"""One adapter per client library, imported only when asked for."""

from __future__ import annotations

import importlib

from ._base import Adapter

__all__ = ["ADAPTERS", "ALIASES", "Adapter", "load"]

#: name -> "module:class"; modules are imported lazily so an absent library costs nothing.
ADAPTERS: dict[str, str] = {
    "urllib3": "poolwatch.adapters._urllib3:Urllib3Adapter",
    "httpx": "poolwatch.adapters._httpx:HttpxAdapter",
    "sqlalchemy": "poolwatch.adapters._sqlalchemy:SQLAlchemyAdapter",
    "redis": "poolwatch.adapters._redis:RedisAdapter",
    "aiohttp": "poolwatch.adapters._aiohttp:AiohttpAdapter",
}

#: Libraries that pool through another one: instrumenting the pool covers them.
ALIASES: dict[str, str] = {"requests": "urllib3", "botocore": "urllib3", "httpcore": "httpx"}


def load(name: str) -> type[Adapter]:
    """The adapter class for a library name (or alias)."""
    target = ADAPTERS[ALIASES.get(name, name)]
    module_name, _, class_name = target.partition(":")
    cls: type[Adapter] = getattr(importlib.import_module(module_name), class_name)
    return cls
