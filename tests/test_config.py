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
    assert fit.LOSSES == tuple(n for n in config.LOSSES if n not in (
        "proxy_anchor", "arcface", "cosface", "subcenter_arcface"))
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


def _number_fields():
    import dataclasses
    import typing

    hints = typing.get_type_hints(config.TrainConfig)
    out = {}
    for field in dataclasses.fields(config.TrainConfig):
        kind = hints[field.name]
        if typing.get_origin(kind) is tuple:  # recall_ks: a list, checked on its own
            continue
        args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        if args[0] in (int, float):
            out[field.name] = args[0]
    return out


def test_every_number_flag_declares_its_bounds():
    """A number flag cannot be added without the range `validate` enforces."""
    fields = _number_fields()
    assert {"lr", "epochs", "eval_batch_size", "early_stop_patience"} <= set(fields)
    missing = [n for n in fields if "bounds" not in config.CONFIG_FIELDS[n].metadata]
    assert not missing, missing
    # Every default (and every loss's default) lies inside its bounds.
    config.TrainConfig(model_dir="m").validate()
    for loss in config.LOSSES:
        config.TrainConfig(model_dir="m", loss=loss, samples_per_class=5,
                           batch_size=200).validate()


# The loss a parameter flag needs to be accepted at all.
_FLAG_LOSS = {flag: flag_losses[0] for flag, (flag_losses, _) in loss_registry.PARAM_FLAGS.items()}
_FLAG_LOSS["margin"] = "triplet"


def _in_bounds(name, value):
    low, high, low_open = config.CONFIG_FIELDS[name].metadata["bounds"]
    if value != value or value in (float("inf"), float("-inf")):
        return False
    return (value > low if low_open else value >= low) and (high is None or value <= high)


def test_every_number_flag_walks_through_its_boundary_values(tmp_path, capsys):
    """0, -1, NaN, inf and a huge value for every number flag of sst_tf.train.

    Each is either refused with one error line naming the flag (exit 2, no
    traceback, nothing written) or accepted because it lies in the flag's
    declared range (--dry_run: flags and data checked, nothing trained).
    """
    import math

    from absl import flags

    from sst_tf import cli, train

    digits = f"--flagfile={config.__file__.rsplit('/sst_tf/', 1)[0]}/configs/digits.cfg"
    model_dir = tmp_path / "run"
    for name, kind in _number_fields().items():
        huge = "1e300" if kind is float else str(2**62)
        for text in ("0", "-1", "nan", "inf", huge):
            argv = ["sst_tf.train", digits, f"--model_dir={model_dir}", f"--{name}={text}",
                    "--dry_run"]
            if name in _FLAG_LOSS:
                argv.append(f"--loss={_FLAG_LOSS[name]}")
            flags.FLAGS.unparse_flags()
            try:
                train.main(cli.parse_flags(argv, "sst_tf.train"))
                code = 0
            except SystemExit as e:
                code = e.code
            finally:
                flags.FLAGS.unparse_flags()
            out, err = capsys.readouterr()
            lines = [ln for ln in err.splitlines() if ": error: " in ln]
            assert "Traceback" not in err, (name, text, err)
            assert not model_dir.exists(), (name, text)
            value = float(text)
            valid = _in_bounds(name, value) and (kind is float or math.isfinite(value))
            if code == 0:
                assert valid, f"--{name}={text} accepted outside its bounds"
                assert "data OK" in out
            else:
                assert code == 2 and len(lines) == 1, (name, text, err)
                assert f"--{name}" in lines[0], (name, text, lines[0])
                assert not valid or "--batch_size" in lines[0], (name, text, lines[0])
