"""Run by tests/test_train_matrix.py: `sst_tf.train` runs, in one process.

The CPU is split into two logical devices first, so `--strategy=mirrored`
trains on two replicas. Usage: _train_matrix.py RUNS.json; RUNS.json is a list
of {"name", "flags", "fail_export"}. Each run goes through the entry point
(`sst_tf.train.main` on parsed flags); "fail_export" makes the export's
verification fail. Prints one line "RESULT" + JSON: per run the exit code,
the lines it wrote to stderr with "error" in them, and the replicas it used.
"""

import contextlib
import io
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from absl import flags  # noqa: E402

from sst_tf import distribute, export, train  # noqa: E402

FLAGS = flags.FLAGS


def main():
    with open(sys.argv[1]) as f:
        runs = json.load(f)
    replicas, made = [], {}
    make_strategy = distribute.make_strategy

    def recording(name, devices=None):
        # The strategy the entry point makes; one per kind in this process, as
        # in a real one (strategies made side by side draw the same collective
        # keys, which TensorFlow's collective executor rejects).
        if name not in made:
            made[name] = make_strategy(name, devices)
        replicas.append(made[name].num_replicas_in_sync)
        return made[name]

    distribute.make_strategy = recording
    verify = export.verify_export

    def failing(*args, **kwargs):
        raise RuntimeError("export verification failed: injected by the test\nsecond line")

    results = {}
    for run in runs:
        export.verify_export = failing if run.get("fail_export") else verify
        FLAGS.unparse_flags()
        argv = FLAGS(["sst_tf.train", *run["flags"]])
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                train.main(argv)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        lines = err.getvalue().splitlines()
        results[run["name"]] = {
            "code": code,
            "error_lines": [ln for ln in lines if "error" in ln.lower()],
            "traceback": any("Traceback" in ln for ln in lines),
            "replicas": replicas[-1],
        }
        sys.stdout.flush()
    print("RESULT" + json.dumps(results))


if __name__ == "__main__":
    main()
