"""Imports a script of scripts/ as a module, once per test process.

A script defines absl flags at import; importing it twice in one process would
define them twice, so every test module loads scripts through here.
"""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
    """scripts/<name>.py as a module (the same module object on every call)."""
    key = f"sst_tf_scripts_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            key, os.path.join(REPO, "scripts", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
