"""The documentation's commands and examples run as written, so the docs cannot drift.

Every `python -m sst_tf.<tool> ...` line in a fenced block of README.md and
docs/*.md: each flag it names must be a flag of that tool (checked against the
tool's --help), and every command on the bundled digits data runs for real, in
the order of the pages, with the tiny settings of `_SHELL_SUBSTITUTIONS`.
Commands that need a data set or machines this environment cannot have are
listed in `_HELP_ONLY` with the reason. The Python blocks of README.md,
docs/api.md and docs/fit.md run as written but for `_PYTHON_SUBSTITUTIONS`
(fewer epochs). All of it runs in a temporary folder holding only the
photos/ images the commands name and a link to configs/.
"""

import glob
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

# A later step of .ci/run: the README's test command leaves these out (pyproject.toml).
pytestmark = pytest.mark.docs_commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]

# Tiny settings for the real runs: (old, new) text replacements on a command line.
_SHELL_SUBSTITUTIONS = [
    # Two epochs instead of 40 (digits.cfg) or 10; later flags override the flagfile's.
    ("--flagfile=configs/digits.cfg", "--flagfile=configs/digits.cfg --epochs=2 --noprogress"),
    ("--epochs=10", "--epochs=2"),
    # A checkpoint the two-epoch run has (it keeps one per epoch).
    ("--checkpoint=20", "--checkpoint=1"),
    # The placeholders of the baselines' diagnostic template.
    ("--model_dir=runs/diag/NAME", "--model_dir=runs/diag/contrastive"),
    ("--loss=LOSS [FLAGS]", "--loss=contrastive"),
]
# Commands whose data set or machines this environment lacks: only their flags are checked.
_HELP_ONLY = {
    "configs/cub.cfg": "CUB-200-2011 is not downloadable here (and the run needs a GPU)",
    "--strategy=multi_worker": "needs two hosts (TF_CONFIG) and CUB",
    "--data_dir=my_images": "a user's own image folder (tests/test_datasets.py reads such trees)",
}
# The other lines of the docs' ```bash blocks, by how they start, and why this test
# does not run them (the lines are checked to be covered by this list).
_NOT_RUN = {
    "pip install": "installs packages: .ci/run does the README's install in a fresh venv",
    "python -m pytest": "the test suite itself, run by .ci/run",
    "tensorboard --logdir": "a server that runs until it is stopped",
    "python study/compare.py": "a multi-seed study (study/tests runs it on tiny data)",
    "python3.11 -m venv /tmp/venv-tfa": "TF 2.15 + tensorflow-addons: not installable on TF 2.21",
    "/tmp/venv-tfa/": "TF 2.15 + tensorflow-addons: not installable on TF 2.21",
    "bash job.sh": "the paper's benchmarks: real data sets and a GPU",
    "export TF_CONFIG=": "the multi-worker setup on two hosts",
}
# Python blocks: (page, old, new) replacements, fewer epochs for the same code.
_PYTHON_SUBSTITUTIONS = [
    ("docs/fit.md", "epochs=40", "epochs=1"),
    ("docs/fit.md", "every=10", "every=1"),  # so the retrieval callback runs in one epoch
    ("docs/api.md", "epochs=5", "epochs=1"),
]
# The order the blocks of a page run in, one process per page (default: page order).
# fit.md's index section indexes the SST model of the first block, the Proxy-Anchor
# section then replaces `model`: so the index block runs before the Proxy-Anchor one.
_PYTHON_ORDER = {"docs/fit.md": [0, 2, 1]}
_PYTHON_PAGES = ["README.md", "docs/api.md", "docs/fit.md"]

_FENCE = re.compile(r"^\s*(```|~~~)(\w*)")


def _blocks(path: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of a Markdown file."""
    blocks, lang, lines = [], None, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = _FENCE.match(line)
            if m and lang is None:
                lang, lines = m.group(2), []
            elif m:
                blocks.append((lang, "".join(lines)))
                lang = None
            elif lang is not None:
                lines.append(line)
    return blocks


def _commands(path: str) -> list[str]:
    """The `python -m sst_tf.*` command lines of a page's blocks (continuations joined)."""
    out = []
    for _, text in _blocks(path):
        text = text.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().removeprefix("$ ")
            # `pip install ... && python -m sst_tf.train ...`: the part from `python -m sst_tf`.
            m = re.search(r"python -m sst_tf\.\w+.*", line)
            if m:
                # Without the comment after the command (two spaces, then #).
                out.append(re.split(r"\s{2,}#", m.group(0))[0].strip())
    return out


def _all_commands() -> list[tuple[str, str]]:
    return [(os.path.relpath(p, ROOT), c) for p in DOCS for c in _commands(p)]


def _tool_and_flags(cmd: str) -> tuple[str, list[str]]:
    words = shlex.split(cmd)
    tool = words[2]
    flags = []
    for w in words[3:]:
        if w.startswith("--"):
            name = w[2:].split("=")[0]
            flags.append(name)
    return tool, flags


def _help(tool: str) -> str:
    proc = subprocess.run([sys.executable, "-m", tool, "--helpfull"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=_env())
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout + proc.stderr


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    # `python` in a command line is the interpreter running the tests.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def test_the_docs_hold_commands_of_every_kind():
    tools = {_tool_and_flags(c)[0] for _, c in _all_commands()}
    assert {"sst_tf.train", "sst_tf.export", "sst_tf.embed", "sst_tf.search",
            "sst_tf.visualize"} <= tools
    # Every entry of the help-only list still names a command of the docs.
    for key in _HELP_ONLY:
        assert any(key in c for _, c in _all_commands()), key


def test_every_other_shell_line_is_listed_with_a_reason():
    unlisted = []
    for path in DOCS:
        for lang, text in _blocks(path):
            if lang not in ("bash", "sh", "shell"):
                continue
            for line in text.replace("\\\n", " ").splitlines():
                line = line.strip()
                if not line or line.startswith("#") or re.match(r"^python -m sst_tf\.", line):
                    continue
                if "&& python -m sst_tf." in line:  # `pip install ... && <command>`: run above
                    line = line.split("&&")[0].strip()
                if not any(line.startswith(key) for key in _NOT_RUN):
                    unlisted.append(f"{os.path.relpath(path, ROOT)}: {line}")
    assert not unlisted


def test_every_flag_a_command_names_exists():
    helps: dict[str, str] = {}
    unknown = []
    for page, cmd in _all_commands():
        tool, flags = _tool_and_flags(cmd)
        if tool not in helps:
            helps[tool] = _help(tool)
        text = helps[tool]
        for name in flags:
            known = (f"--{name}:" in text or f"--[no]{name}:" in text
                     or (name.startswith("no") and f"--[no]{name[2:]}:" in text))
            if not known:
                unknown.append(f"{page}: --{name} in {cmd}")
    assert not unknown


def _photos(folder: str) -> None:
    """The images the commands name: photos/*.jpg, photos/cat.jpg, new_photos/*.png."""
    rng = np.random.default_rng(0)
    for sub, names in (("photos", ["cat.jpg", "dog.jpg", "a.png"]),
                       ("new_photos", ["x.png", "y.jpg"])):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for name in names:
            pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, sub, name))


@pytest.mark.slow
def test_digits_commands_run_as_written(tmp_path):
    os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
    _photos(str(tmp_path))
    ran, seen = [], set()
    for page, cmd in _all_commands():
        if any(key in cmd for key in _HELP_ONLY):
            continue
        for old, new in _SHELL_SUBSTITUTIONS:
            cmd = cmd.replace(old, new)
        if cmd in seen:  # README and training.md share the quick start
            continue
        seen.add(cmd)
        proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600, env=_env())
        assert proc.returncode == 0, f"{page}: {cmd}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        ran.append(cmd)
    # What the commands say they write.
    for path in ["runs/digits/metrics.json", "runs/digits/export", "exports/epoch20",
                 "emb.npz", "photos.npz", "jpgs.npz", "res.json", "figs/digits",
                 "runs/diag/contrastive/metrics.json"]:
        assert (tmp_path / path).exists(), path
    assert len(ran) >= 10


def _python_blocks(page: str) -> list[str]:
    return [text for lang, text in _blocks(os.path.join(ROOT, page)) if lang == "python"]


@pytest.mark.slow
@pytest.mark.parametrize("page", _PYTHON_PAGES)
def test_python_examples_run_as_written(page, tmp_path):
    blocks = _python_blocks(page)
    assert blocks
    order = _PYTHON_ORDER.get(page, range(len(blocks)))
    assert sorted(order) == list(range(len(blocks)))
    code = "\n".join(blocks[i] for i in order)
    for where, old, new in _PYTHON_SUBSTITUTIONS:
        if where == page:
            assert old in code, (page, old)
            code = code.replace(old, new)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=_env())
    assert proc.returncode == 0, f"{page}\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
