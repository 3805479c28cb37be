"""The export formats beside the SavedModel: names, files, and whether they are installed.

TensorFlow-free (the configuration checks ``--export_formats`` with it before
anything loads); `sst_tf.convert` writes the files.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

FORMATS = ("onnx", "litert", "litert_int8")
INPUTS = ("images", "crop")
METADATA_KEY = "sst_tf"
# format -> ({python module it needs: its pip package}, the extra that installs them)
_NEEDS = {"onnx": ({"tf2onnx": "tf2onnx", "onnxruntime": "onnxruntime"}, "onnx"),
          "litert": ({"ai_edge_litert": "ai-edge-litert"}, "litert"),
          "litert_int8": ({"ai_edge_litert": "ai-edge-litert"}, "litert")}


def parse_formats(items: Sequence[str] | str | None) -> tuple[str, ...]:
    """The formats of a ``--formats`` list ("savedmodel", always written, is skipped).

    Raises:
      ValueError: an unknown format, naming the choices.
    """
    if isinstance(items, str):
        items = items.split(",")
    out = []
    for item in items or ():
        name = item.strip().lower()
        if name in ("", "savedmodel"):
            continue
        if name not in FORMATS:
            raise ValueError(f"unknown export format {item!r}: choose from savedmodel, "
                             f"{', '.join(FORMATS)}.")
        if name not in out:
            out.append(name)
    return tuple(out)


def check_available(formats: Sequence[str], flag: str = "--formats") -> None:
    """Refuses formats whose converter or runtime is not installed (before any work).

    Raises:
      ValueError: naming the format, the missing module and the pip command.
    """
    for fmt in formats:
        modules, extra = _NEEDS[fmt]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(
                f"{flag}={fmt} needs {' and '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed: "
                f"pip install 'sst_tf[{extra}]' (or pip install {' '.join(modules.values())}).")


def file_name(fmt: str, input_kind: str) -> str:
    """The file of one format and input, e.g. ``embedder_images_int8.tflite``."""
    suffix = "_int8" if fmt == "litert_int8" else ""
    ext = ".onnx" if fmt == "onnx" else ".tflite"
    return f"embedder_{input_kind}{suffix}{ext}"
