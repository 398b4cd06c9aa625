"""Loads dapr/local/stack.py (a script, not part of the installed package) for the fixtures."""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[1] / "dapr" / "local" / "stack.py"
_spec = importlib.util.spec_from_file_location("shop_stack", _path)
stack = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stack)
