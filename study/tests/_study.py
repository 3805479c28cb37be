"""Imports a script of study/ as a module, once per test process.

A script defines absl flags at import; importing it twice in one process would
define them twice, so every test module loads the study's scripts through here.
"""

import importlib.util
import os
import sys

STUDY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
    """study/<name>.py as a module (the same module object on every call)."""
    key = f"sst_tf_study_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            key, os.path.join(STUDY, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
