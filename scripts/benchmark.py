"""Speed and memory benchmarks; writes BENCHMARKS.md.

Usage:
  python scripts/benchmark.py                      # all sections
  python scripts/benchmark.py --sections=losses    # only some (comma-separated)

Each measured subject is a module of scripts/benchmarks/ with a function
`bench_<section>(args) -> str` returning Markdown, registered in SECTIONS
here. Only the sections run are regenerated in BENCHMARKS.md; the others are
kept. To add a section: write the module and add its function to SECTIONS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from sst_tf import cli  # noqa: E402

cli.quiet_tensorflow()  # before TensorFlow's start-up lines reach the terminal

import tensorflow as tf  # noqa: E402
from benchmarks import (  # noqa: E402
    digits,
    formats,
    index,
    input_pipeline,
    kmeans,
    losses,
    nmi,
    pml,
    refresh,
    scaling,
    step,
)
from benchmarks.common import machine_description  # noqa: E402

SECTIONS: dict[str, Callable] = {
    "losses": losses.bench_losses,
    "nmi": nmi.bench_nmi,
    "nmi_sop": nmi.bench_nmi_sop,
    "kmeans": kmeans.bench_kmeans,
    "step": step.bench_step,
    "refresh": refresh.bench_refresh,
    "input": input_pipeline.bench_input,
    "scaling": scaling.bench_scaling,
    "digits": digits.bench_digits,
    "index": index.bench_index,
    "pml": pml.bench_pml,
    "formats": formats.bench_formats,
}


def update_markdown(path: Path, results: dict[str, str]) -> None:
    """Replaces the blocks of the sections run; keeps the others in SECTIONS order."""
    old = path.read_text() if path.exists() else ""
    blocks = dict(re.findall(r"<!-- section: (\w+) -->\n(.*?)<!-- end section: \1 -->\n",
                             old, flags=re.S))
    blocks.update(results)
    order = list(SECTIONS) + sorted(set(blocks) - set(SECTIONS))
    parts = ["# Benchmarks\n\nWritten by `python scripts/benchmark.py [--sections=a,b]`; each "
             "section is regenerated only when run and names the machine it ran on.\n"]
    for name in order:
        if name in blocks:
            parts.append(f"<!-- section: {name} -->\n{blocks[name]}<!-- end section: {name} -->\n")
    path.write_text("\n".join(parts))


def _usage_error(message: str) -> None:
    sys.exit(cli.fail("benchmark.py", f"{message} (see --help)", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated, from: {', '.join(SECTIONS)}; default: all "
                             "(pml only with --pml_python)")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of the slow form")
    parser.add_argument("--eval_n", type=int, default=60000, help="rows for the eval benchmark")
    parser.add_argument("--nmi_sizes", default="6000x976,12000x2000",
                        help="NxCLASSES list of the nmi section")
    parser.add_argument("--nmi_sop_n", type=int, default=60502, help="rows, nmi_sop section")
    parser.add_argument("--nmi_sop_classes", type=int, default=11316,
                        help="classes (= clusters), nmi_sop section")
    parser.add_argument("--nmi_sop_spread", default="6000x976",
                        help="NxCLASSES list run with several seeds first, nmi_sop section")
    parser.add_argument("--nmi_sop_seeds", type=int, default=3,
                        help="k-means seeds at the --nmi_sop_spread sizes")
    parser.add_argument("--kmeans_n", type=int, default=60000, help="rows for the kmeans section")
    parser.add_argument("--kmeans_iters", type=int, default=20, help="Lloyd iterations timed")
    parser.add_argument("--kmeans_repeats", type=int, default=1, help="timed k-means runs")
    parser.add_argument("--step_size", type=int, default=None,
                        help="input side of the step/scaling sections (default: 224 on GPU, 75 "
                             "on CPU)")
    parser.add_argument("--step_batch", type=int, default=200, help="batch of the step section")
    parser.add_argument("--step_repeats", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--scaling_batch", type=int, default=32,
                        help="per-replica batch of the scaling section")
    parser.add_argument("--refresh_size", type=int, default=32, help="image side, refresh section")
    parser.add_argument("--refresh_backbone", default="small_cnn",
                        help="model of the refresh section (small_cnn on CPU)")
    parser.add_argument("--refresh_sample", type=int, default=1000,
                        help="images timed for the refresh section's pass/epoch")
    parser.add_argument("--refresh_kmeans", default="sklearn,tf",
                        help="k-means methods of the refresh section")
    parser.add_argument("--refresh_scale", type=float, default=1.0,
                        help="shrink the refresh section's N (smoke runs)")
    parser.add_argument("--input_n", type=int, default=400, help="JPEG files, input section")
    parser.add_argument("--input_epochs", type=int, default=3, help="timed epochs, input section")
    parser.add_argument("--index_n", type=int, default=100000, help="vectors, index section")
    parser.add_argument("--_scaling_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pml_python", default=os.environ.get("PML_PYTHON", ""),
                        help="pml section: python of a side environment with torch and "
                             "pytorch-metric-learning 2.9 (default: $PML_PYTHON)")
    parser.add_argument("--pml_repeats", type=int, default=10, help="timed runs, pml section")
    parser.add_argument("--formats_epochs", type=int, default=40,
                        help="formats section: epochs of the digits model (the demo's 40)")
    parser.add_argument("--formats_models", default="digits,inception_v3",
                        help="formats section: models (digits: trained, with MAP@R; "
                             "inception_v3: random weights, size and latency)")
    parser.add_argument("--_eval_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_formats_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_loss_child", default=None, help=argparse.SUPPRESS)
    parser.error = _usage_error  # one line, as every command of the project
    args = parser.parse_args()
    if args._formats_child:  # first: TensorFlow's threads are set before it runs anything
        print(json.dumps(formats.formats_child(args)))
        return
    if args.step_size is None:
        args.step_size = 224 if tf.config.list_physical_devices("GPU") else 75
    if args._scaling_child:
        print(json.dumps(scaling._scaling_child(args)))
        return
    if args._loss_child:
        print(json.dumps(pml._loss_child(args._loss_child)))
        return
    if args._eval_child:
        n, dim = (int(v) for v in args._eval_child.split(","))
        print(json.dumps(losses._eval_child(n, dim, (1, 10, 100, 1000))))
        return
    from sst_tf import formats as formats_lib

    try:
        formats_lib.check_available(formats_lib.FORMATS, "the formats section: --formats")
        missing_formats = ""
    except ValueError as e:
        missing_formats = str(e)
    if args.sections is None:
        names = [s for s in SECTIONS if (s != "pml" or args.pml_python)
                 and (s != "formats" or not missing_formats)]
        if "pml" not in names:
            print("[benchmark] section pml left out: no --pml_python (side environment)")
        if "formats" not in names:
            print(f"[benchmark] section formats left out: {missing_formats}")
    else:
        names = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    if "pml" in names and not (args.pml_python and os.path.isfile(args.pml_python)):
        parser.error(f"--pml_python={args.pml_python!r} is not a file: the pml section needs "
                     "the python of a side environment with pytorch-metric-learning 2.9 (how "
                     "to make one: scripts/make_pml_fixtures.py); or leave pml out of --sections")
    if "formats" in names and missing_formats:
        parser.error(f"{missing_formats} Or leave formats out of --sections.")
    output = Path(args.output)
    if output.is_dir() or (output.exists() and not output.read_text(errors="replace")
                           .startswith("# Benchmarks")):
        parser.error(f"--output={args.output} exists and is not a benchmark file written by "
                     "this script (nothing was changed); choose another file")
    results = {}
    for name in names:
        print(f"[benchmark] section {name} ...", flush=True)
        load = os.getloadavg()[0]  # other jobs on the machine make every timing slower
        t0 = time.perf_counter()
        body = SECTIONS[name](args)
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results[name] = (f"## {name}\n\n_Machine: {machine_description()}. Run {stamp}, "
                         f"{time.perf_counter() - t0:.0f} s; load average {load:.1f} at its "
                         f"start._\n\n{body}")
        print(body, flush=True)
    update_markdown(Path(args.output), results)
    print(f"[benchmark] wrote {args.output}")


if __name__ == "__main__":
    main()
