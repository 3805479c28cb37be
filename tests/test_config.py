"""Each choice list is written once: the modules implementing the choices use config's tuples."""

import subprocess
import sys

from sst_tf import config, distribute, fit, kmeans, loss_registry, losses, sampling, step
from sst_tf import model as model_lib
from sst_tf.datasets import DATA_SOURCES


def test_module_constants_are_the_config_tuples():
    assert config.LOSSES is loss_registry.LOSSES and config.LOSSES == tuple(
        loss_registry.LOSS_SPECS)
    assert config.TARGET_LOSSES is loss_registry.TARGET_LOSSES is fit.TARGET_LOSSES
    assert fit.LOSSES == tuple(n for n in config.LOSSES if n != "proxy_anchor")
    assert config.DATA_SOURCES is DATA_SOURCES
    assert losses.SST_IMPOSTERS is config.SST_IMPOSTERS
    assert sampling.NEIGHBORHOODS is config.NEIGHBORHOODS
    assert kmeans.METHODS is config.KMEANS_METHODS
    assert distribute.STRATEGIES is config.STRATEGIES


def test_implementations_cover_exactly_the_choices():
    # Name -> implementation maps keyed by the same names.
    assert set(sampling.SAMPLERS) == set(config.SAMPLERS)
    assert set(model_lib.BACKBONES) == set(config.BACKBONES)
    assert [step.precision_policy(p) for p in config.PRECISIONS] == [
        "float32", "mixed_bfloat16", "mixed_float16"]


def test_config_imports_no_tensorflow():
    code = "import sys, sst_tf.config; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
