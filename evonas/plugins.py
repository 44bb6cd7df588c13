"""Load user code named as `pkg.module:function` (or `path/to/file.py:function`)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class PluginError(ValueError):
    """A `pkg.module:function` reference that cannot be loaded; the message names it."""


def load_callable(ref: str, what: str) -> Callable[..., Any]:
    """Import `ref` and return the callable it names; `what` names the setting in errors."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"{what}: expected pkg.module:function, got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # `evonas` runs as a console script: find the user's modules
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except PluginError as exc:
        raise PluginError(f"{what}: {exc}") from None
    except Exception as exc:  # any import-time failure of user code
        raise PluginError(f"{what}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise PluginError(f"{what}: {module_name!r} has no function {attr!r}")
    return fn


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise PluginError(f"{path}: no such file")
    name = f"evonas_user_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
