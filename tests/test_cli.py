"""The shared entry-point helpers: error lines, exit codes, flag parsing."""

import pytest
from absl import flags

from sst_tf import cli


def _main_raising(error):
    @cli.entry_point("prog")
    def main(argv):
        raise error

    return main


@pytest.mark.parametrize("error, code", [
    (cli.UsageError("--x=1 is wrong\n  second line"), 2),
    (cli.RunError("nothing decoded"), 1),
])
def test_errors_become_one_line_and_a_code(error, code, capsys):
    assert _main_raising(error)(["prog"]) == code
    err = capsys.readouterr().err
    assert err.splitlines() == [f"prog: error: {' '.join(str(error).split())}"]


def test_results_closed_pipe_and_interrupt(capsys):
    @cli.entry_point("prog")
    def ok(argv):
        return None

    assert ok(["prog"]) == 0
    assert _main_raising(BrokenPipeError())(["prog"]) == 1
    assert _main_raising(KeyboardInterrupt())(["prog"]) == 130
    assert capsys.readouterr().err.splitlines() == ["prog: interrupted"]
    with pytest.raises(ZeroDivisionError):  # a bug stays a traceback
        _main_raising(ZeroDivisionError())(["prog"])


def test_parse_flags_bad_value_is_one_line_and_status_2(capsys):
    fv = flags.FlagValues()
    flags.DEFINE_integer("top_k", 5, "k", flag_values=fv)
    assert cli.parse_flags(["prog", "--top_k=3", "rest"], "prog", fv) == ["prog", "rest"]
    assert fv.top_k == 3
    fv.unparse_flags()
    with pytest.raises(SystemExit) as e:
        cli.parse_flags(["prog", "--top_k=x"], "prog", fv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prog: error: flag --top_k=x")


@pytest.mark.parametrize("module,argv,needle", [
    ("sst_tf.embed", ["--images=x"], "--export_dir is required"),
    ("sst_tf.search", ["--index=x"], "--query is required"),
    ("sst_tf.visualize", [], "--model_dir is required"),
    ("sst_tf.verify", ["--export_dir=x", "--images=a"], "--images takes two image files"),
    ("sst_tf.calibrate", ["--export_dir=x"], "--images is required"),
])
def test_usage_errors_come_before_tensorflow_is_imported(tmp_path, module, argv, needle):
    import os
    import subprocess
    import sys

    # A tensorflow that cannot be imported: a usage error must not need it.
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('tensorflow was imported')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{root}")
    proc = subprocess.run([sys.executable, "-m", module, *argv], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
