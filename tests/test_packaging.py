"""The installable package: wheel contents, declared dependencies, a clean install.

Builds the wheel from a copy of the checkout (so no build files land in it),
installs it into a fresh virtual environment outside the checkout and uses it
from a folder outside the checkout. The new environment sees the site-packages
of the interpreter running the tests (a venv, conda or the system's) through a
.pth file, so TensorFlow is not downloaded again and `--no-index` (with no
find-links) downloads nothing at all; the checkout itself is not on its path.
"""

import email.parser
import glob
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Its module fixtures are built once, on one worker (pyproject.toml: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("packaging")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Generated or bulky folders of a working copy that are not sources of the build.
_SKIP = {".git", "build", "dist", "runs", "data", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _ignore(folder, names):
    return [n for n in names
            if n in _SKIP or n.endswith(".egg-info") or n.startswith(".venv")]


def _pins(path: str) -> dict[str, str]:
    """`name -> version` of the `name==version` lines of a requirements file."""
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                req = Requirement(line)
                (spec,) = req.specifier
                assert spec.operator == "==", line
                pins[canonicalize_name(req.name)] = spec.version
    return pins


def _package_modules() -> set[str]:
    """Every .py file of the package in the checkout, relative to the checkout."""
    pattern = os.path.join(ROOT, "sst_tf", "**", "*.py")
    return {os.path.relpath(p, ROOT).replace(os.sep, "/")
            for p in glob.glob(pattern, recursive=True)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src") / "sst_tf_src"
    shutil.copytree(ROOT, src, ignore=_ignore)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = glob.glob(str(out / "sst_tf-*.whl"))
    return path


def _metadata(wheel_path):
    with zipfile.ZipFile(wheel_path) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode())


def test_wheel_holds_every_module_of_the_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        in_wheel = {n for n in z.namelist() if n.endswith(".py")}
    modules = _package_modules()
    assert "sst_tf/datasets/__init__.py" in modules
    assert in_wheel == modules


def test_wheel_declares_the_pinned_requirements(wheel):
    requires = [Requirement(r) for r in _metadata(wheel).get_all("Requires-Dist")]
    runtime = {canonicalize_name(r.name): r for r in requires if r.marker is None}
    pins = _pins(os.path.join(ROOT, "requirements.txt"))
    # The same packages as requirements.txt, each range admitting its pinned version.
    assert set(runtime) == set(pins)
    for name, version in pins.items():
        assert runtime[name].specifier.contains(version), (name, version, runtime[name])
    # The `dev` extra admits requirements-dev.txt's pins; `cuda` adds TF's CUDA libraries.
    dev_pins = _pins(os.path.join(ROOT, "requirements-dev.txt"))
    dev = {canonicalize_name(r.name): r for r in requires
           if r.marker is not None and r.marker.evaluate({"extra": "dev"})}
    assert set(dev) == set(dev_pins)
    for name, version in dev_pins.items():
        assert dev[name].specifier.contains(version), (name, version, dev[name])
    # The export formats' extras admit the same pins (the tests ran with them).
    for extra, names in (("onnx", {"tf2onnx", "onnxruntime"}), ("litert", {"ai-edge-litert"})):
        got = {canonicalize_name(r.name): r for r in requires
               if r.marker is not None and r.marker.evaluate({"extra": extra})}
        assert set(got) == names, extra
        assert all(got[n].specifier.contains(dev_pins[n]) for n in names), extra
    cuda = [r for r in requires if r.marker is not None and r.marker.evaluate({"extra": "cuda"})]
    assert [(canonicalize_name(r.name), r.extras) for r in cuda] == [("tensorflow", {"and-cuda"})]
    assert cuda[0].specifier.contains(pins["tensorflow"])


def _running_site_dirs() -> list[str]:
    """The site-packages folders of the interpreter running the tests, outside the checkout.

    In a venv or conda environment these are its own folders (and the base
    interpreter's when it was made with system site-packages); on a system
    interpreter the system's and the user's folders.
    """
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    root = os.path.realpath(ROOT)
    out = []
    for d in dirs:
        real = os.path.realpath(d)
        # A venv inside the clone (.venv-ci) is fine; the checkout itself is not.
        if os.path.isdir(real) and real not in out and real != root:
            out.append(real)
    return out


def _new_venv(env_dir) -> str:
    """A venv of its own (no system site-packages) that also sees the running one's packages.

    Plain path lines of a .pth file are appended to sys.path after the venv's
    own site-packages (so what is installed there wins), and the .pth files of
    those folders are not run (so an editable install of the checkout stays
    invisible).
    """
    venv.EnvBuilder(system_site_packages=False, with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(own, "_running_env.pth"), "w") as f:
        f.write("".join(d + "\n" for d in _running_site_dirs()))
    return python


def test_running_site_dirs_hold_tensorflow_and_not_the_checkout():
    dirs = _running_site_dirs()
    import tensorflow
    tf_dir = os.path.realpath(os.path.dirname(os.path.dirname(tensorflow.__file__)))
    assert tf_dir in dirs
    assert os.path.realpath(ROOT) not in dirs


@pytest.mark.slow
def test_installed_wheel_works_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    python = _new_venv(env_dir)
    # No PIP_FIND_LINKS / PIP_INDEX_URL from the caller: only what is installed counts.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME") and not k.startswith("PIP_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # --no-index: the dependencies must already be met by the requirements.txt set.
    proc = subprocess.run([python, "-m", "pip", "install", "--no-index", wheel],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    modules = sorted(m[:-3].replace("/", ".").removesuffix(".__init__")
                     for m in _package_modules())
    script = (
        "import importlib, json, sys\n"
        f"mods = {modules!r}\n"
        "files = {m: importlib.import_module(m).__file__ for m in mods}\n"
        "import tensorflow\n"
        "print(json.dumps({'files': files, 'path': sys.path, 'tf': tensorflow.__file__}))\n")
    proc = subprocess.run([python, "-c", script], cwd=elsewhere, capture_output=True,
                          text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    root = os.path.realpath(ROOT)
    # The checkout is not on the path (a venv inside it, like .venv-ci, may be).
    assert not [p for p in out["path"] if p and os.path.realpath(p) == root]
    venv_root = os.path.realpath(env_dir)
    assert set(out["files"]) == set(modules)
    for module, path in out["files"].items():
        assert os.path.realpath(path).startswith(venv_root), (module, path)
    # TensorFlow came from the running environment, not from a download into the new one.
    assert not os.path.realpath(out["tf"]).startswith(venv_root), out["tf"]

    proc = subprocess.run([python, "-m", "sst_tf.train", "--help"], cwd=elsewhere,
                          capture_output=True, text=True, env=env, timeout=120)
    # absl prints the usage and exits with 1 after --help; a crash would show a traceback.
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--model_dir" in proc.stdout and "--flagfile" in proc.stdout
