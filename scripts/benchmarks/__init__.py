"""The sections of scripts/benchmark.py, one module per measured subject."""
