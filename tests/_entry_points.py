"""Runs a command's `main` in the test's process on freshly parsed flags.

The command's flags are defined into a new `FlagValues` (so TensorFlow starts
once per test process and flags of earlier runs never leak in) and the
module's `FLAGS` points at it for the run.
"""

from absl import flags

from sst_tf import cli


def run_main(module, argv, capsys, monkeypatch):
    """Parses argv into a fresh FlagValues and runs module.main; (code, stdout, stderr)."""
    fv = flags.FlagValues()
    module.define_flags(fv)
    monkeypatch.setattr(module, "FLAGS", fv)
    try:
        code = module.main(cli.parse_flags([module.PROG, *argv], module.PROG, fv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
