"""The layout of a training run's folder (`--model_dir`), in one place.

Everything a run writes lives under its folder; the trainer, the export, the
report and the figures find the pieces through `RunFolder`:

  config.json     the run's flags and split sizes (resume checks read it)
  metrics.json    "before" / "after" / per-epoch metrics and the run's settings
  checkpoints/    tf.train checkpoints (interrupted/: the one a signal wrote)
  train/, eval/   TensorBoard events
  export/         the SavedModel written at the end of training
  projector/      the TensorBoard projector files (a folder of their own)
  figures/        retrieval grid and t-SNE plot (`sst_tf.visualize`)
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder."""

    root: str

    def _join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config(self) -> str:
        """config.json."""
        return self._join("config.json")

    @property
    def metrics(self) -> str:
        """metrics.json."""
        return self._join("metrics.json")

    @property
    def checkpoints(self) -> str:
        """checkpoints/."""
        return self._join("checkpoints")

    @property
    def train_events(self) -> str:
        """train/: TensorBoard events of training."""
        return self._join("train")

    @property
    def eval_events(self) -> str:
        """eval/: TensorBoard events of evaluation."""
        return self._join("eval")

    @property
    def export(self) -> str:
        """export/: the SavedModel."""
        return self._join("export")

    @property
    def projector(self) -> str:
        """projector/: the projector files."""
        return self._join("projector")

    @property
    def figures(self) -> str:
        """figures/: the figures of `sst_tf.visualize`."""
        return self._join("figures")


def interrupted_dir(checkpoint_dir: str) -> str:
    """Where a checkpoint written on a signal goes, inside a checkpoint folder."""
    return os.path.join(checkpoint_dir, "interrupted")
