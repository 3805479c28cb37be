"""study/make_glyphs.py on a few Arabic and Hebrew characters in installed fonts."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "study", "make_glyphs.py")
sys.path.insert(0, os.path.join(REPO, "study"))
import make_glyphs  # noqa: E402

from sst_tf.datasets import folder  # noqa: E402

SMALL = dict(images_per_class=3, num_train_classes=4, num_test_classes=3, num_val_classes=2,
             image_size=16, train_scripts=["arabic"], test_scripts=["hebrew"], min_fonts=2)


@pytest.fixture(scope="module")
def fonts_dir(tmp_path_factory):
    """A folder with copies of up to 3 installed font files drawing Arabic and Hebrew.

    DejaVu Sans (fonts-dejavu-core) has both; a machine without two such font
    files skips these tests.
    """
    try:
        faces = make_glyphs.discover_fonts(None)
    except make_glyphs.GlyphError as e:
        pytest.skip(f"no fontconfig: {e}")
    wanted = set(make_glyphs.SCRIPTS["arabic"]) | set(make_glyphs.SCRIPTS["hebrew"])
    files = sorted({f["path"] for f in faces
                    if f["index"] == 0 and f["path"].lower().endswith(".ttf")
                    and wanted <= f["charset"]})
    if len(files) < 2:
        pytest.skip("needs 2 installed .ttf fonts drawing Arabic and Hebrew letters "
                    "(apt-get install -y fonts-dejavu-core)")
    out = tmp_path_factory.mktemp("fonts")
    for path in files[:3]:
        shutil.copyfile(path, out / os.path.basename(path))
    return str(out)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, timeout=120)


def _images(root):
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            if fn.endswith(".png"):
                with open(os.path.join(dirpath, fn), "rb") as f:
                    out[os.path.relpath(os.path.join(dirpath, fn), root)] = f.read()
    return out


def test_layout_read_by_folder_reader(tmp_path, fonts_dir):
    out = str(tmp_path / "glyphs")
    manifest = make_glyphs.build(out, seed=0, fonts_dir=fonts_dir, **SMALL)
    ds = folder.load(out, check_images=False)
    train_names = set(ds.train.class_names)
    test_names = set(ds.test.class_names)
    assert (len(ds.train), len(train_names)) == (12, 4)
    assert (len(ds.test), len(test_names)) == (9, 3)
    assert not train_names & test_names
    # Class names carry the script and code point; the characters are as promised.
    for name in train_names | test_names:
        script, code = name.split("_")
        assert int(code, 16) in make_glyphs.SCRIPTS[script]
        assert not make_glyphs.is_reserved(int(code, 16))
    assert {n.split("_")[0] for n in train_names} == {"arabic"}
    assert {n.split("_")[0] for n in test_names} == {"hebrew"}
    # The validation data set splits the training classes into two disjoint halves.
    val = folder.load(os.path.join(out, "val"), check_images=False)
    val_train = set(val.train.class_names)
    val_test = set(val.test.class_names)
    assert (len(val_train), len(val_test)) == (2, 2)
    assert not val_train & val_test and val_train | val_test == train_names
    assert manifest["counts"] == {"train": [12, 4], "test": [9, 3], "val/train": [6, 2],
                                  "val/test": [6, 2]}
    # Images: grey-scale, the asked size, bright ink on a black background.
    for path in list(ds.train.paths) + list(ds.test.paths):
        img = np.asarray(Image.open(path))
        assert img.shape == (16, 16)
        assert (img == 0).mean() > 0.3 and img.max() > 128
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["written_by"] == make_glyphs.MARKER


def test_same_seed_same_images_other_seed_differs(tmp_path, fonts_dir):
    a = make_glyphs.build(str(tmp_path / "a"), seed=3, fonts_dir=fonts_dir, **SMALL)
    b = make_glyphs.build(str(tmp_path / "b"), seed=3, fonts_dir=fonts_dir, **SMALL)
    c = make_glyphs.build(str(tmp_path / "c"), seed=4, fonts_dir=fonts_dir, **SMALL)
    assert _images(tmp_path / "a") == _images(tmp_path / "b")
    assert a["images_sha256"] == b["images_sha256"] != c["images_sha256"]


def test_cli_refuses_foreign_folder_and_replaces_its_own(tmp_path, fonts_dir):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    small = ["--images_per_class=2", "--num_train_classes=3", "--num_test_classes=2",
             "--num_val_classes=1", "--image_size=12", "--train_scripts=arabic",
             "--test_scripts=hebrew", "--min_fonts=2", f"--fonts_dir={fonts_dir}"]
    r = _run(f"--output_dir={foreign}", *small)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("make_glyphs.py: error: --output_dir=")
    assert "Traceback" not in r.stderr
    assert (foreign / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(foreign)) == ["keep.txt"]

    ours = tmp_path / "ours"
    assert _run(f"--output_dir={ours}", *small).returncode == 0
    r = _run(f"--output_dir={ours}", *small, "--seed=1")
    assert r.returncode == 0, r.stderr
    with open(ours / "manifest.json") as f:
        assert json.load(f)["flags"]["seed"] == 1
    assert [p for p in os.listdir(tmp_path) if p.startswith(".ours")] == []


def test_cli_names_missing_font_package(tmp_path):
    empty = tmp_path / "nofonts"
    empty.mkdir()
    r = _run(f"--output_dir={tmp_path / 'out'}", f"--fonts_dir={empty}", "--test_scripts=thai")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("make_glyphs.py: error:") and "apt-get install -y" in last
    assert "Traceback" not in r.stderr
    if shutil.which("fc-scan"):
        assert "fonts-thai-tlwg" in last
    assert not (tmp_path / "out").exists()
