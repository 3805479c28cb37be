"""study/make_suite.py: tiny versions of every benchmark from a few installed fonts."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "study"))
import make_glyphs  # noqa: E402
import make_suite  # noqa: E402

from sst_tf.datasets import folder  # noqa: E402

# Tiny sizes of the character benchmarks, on the Arabic and Hebrew of the test fonts.
TINY = {
    "cross_script": dict(images_per_class=2, num_train_classes=4, num_test_classes=3,
                         num_val_classes=2, train_scripts=["arabic"], test_scripts=["hebrew"],
                         min_fonts=2),
    "within_script": dict(images_per_class=2, num_train_classes=4, num_test_classes=4,
                          num_val_classes=2, train_scripts=["arabic", "hebrew"],
                          test_scripts=["arabic", "hebrew"], min_fonts=2),
    "many_classes": dict(images_per_class=2, num_train_classes=12, num_test_classes=12,
                         num_val_classes=4, train_scripts=["arabic"], test_scripts=["hebrew"],
                         min_fonts=2),
    "typeface": dict(scripts=["hebrew"], images_per_class=3, min_chars=3, test_share=0.4),
}


def _copy_fonts(tmp_path_factory, scripts, least, most):
    """A folder with copies of installed .ttf files drawing every letter of `scripts`."""
    try:
        faces = make_glyphs.discover_fonts(None)
    except make_glyphs.GlyphError as e:
        pytest.skip(f"no fontconfig: {e}")
    wanted = set().union(*(make_glyphs.SCRIPTS[s] for s in scripts))
    files = sorted({f["path"] for f in faces
                    if f["index"] == 0 and f["path"].lower().endswith(".ttf")
                    and wanted <= f["charset"]})
    if len(files) < least:
        pytest.skip(f"needs {least} installed .ttf fonts drawing {' and '.join(scripts)} "
                    "letters (apt-get install -y fonts-dejavu-core fonts-dejavu-extra)")
    out = tmp_path_factory.mktemp("fonts")
    for path in files[:most]:
        shutil.copyfile(path, out / os.path.basename(path))
    return str(out)


@pytest.fixture(scope="module")
def fonts_dir(tmp_path_factory):
    """Up to 3 fonts drawing Arabic and Hebrew (DejaVu Sans has both)."""
    return _copy_fonts(tmp_path_factory, ["arabic", "hebrew"], 2, 3)


@pytest.fixture(scope="module")
def hebrew_fonts_dir(tmp_path_factory):
    """5 fonts drawing Hebrew: the typeface benchmark's 5 classes (DejaVu Sans cuts)."""
    return _copy_fonts(tmp_path_factory, ["hebrew"], 5, 5)


def _names(root):
    return set(os.listdir(root))


def test_every_benchmark_has_disjoint_splits_and_a_validation_split(tmp_path, fonts_dir):
    out = str(tmp_path / "suite")
    names = ["cross_script", "within_script", "many_classes"]
    summary = make_suite.build_suite(out, names, seed=0, image_size=12, fonts_dir=fonts_dir,
                                     overrides=TINY)
    assert sorted(summary) == sorted(names)
    with open(os.path.join(out, "suite.json")) as f:
        assert json.load(f)["benchmarks"] == summary
    for name in names:
        root = os.path.join(out, name)
        ds = folder.load(root, check_images=False)
        train, test = set(ds.train.class_names), set(ds.test.class_names)
        assert train and test and not train & test, name
        val_train = _names(os.path.join(root, "val", "train"))
        val_test = _names(os.path.join(root, "val", "test"))
        assert val_train and val_test and not val_train & val_test, name
        assert val_train | val_test == train, name
        counts = summary[name]["counts"]
        assert counts["train"][1] == len(train) and counts["test"][1] == len(test)
    # within_script: both scripts on both sides, never the same character.
    ws = folder.load(os.path.join(out, "within_script"), check_images=False)
    assert {n.split("_")[0] for n in ws.test.class_names} == {"arabic", "hebrew"}
    assert {n.split("_")[0] for n in ws.train.class_names} == {"arabic", "hebrew"}
    # many_classes: the asked number of classes, the asked images per class.
    mc = folder.load(os.path.join(out, "many_classes"), check_images=False)
    assert (len(mc.train), len(set(mc.train.class_names))) == (24, 12)


def test_typeface_classes_show_characters_their_split_never_saw(tmp_path, hebrew_fonts_dir):
    out = str(tmp_path / "tf")
    summary = make_suite.build_suite(out, ["typeface"], seed=1, image_size=12,
                                     fonts_dir=hebrew_fonts_dir, overrides=TINY)
    ds = folder.load(os.path.join(out, "typeface"), check_images=False)
    assert not set(ds.train.class_names) & set(ds.test.class_names)
    val_train = _names(os.path.join(out, "typeface", "val", "train"))
    val_test = _names(os.path.join(out, "typeface", "val", "test"))
    assert val_train and val_test and not val_train & val_test
    assert val_train | val_test == set(ds.train.class_names)
    with open(os.path.join(out, "typeface", "manifest.json")) as f:
        manifest = json.load(f)
    assert summary["typeface"]["images_sha256"] == manifest["images_sha256"]
    chars = manifest["characters"]["hebrew"]
    assert not set(chars["train"]) & set(chars["test"])
    assert not set(chars["train"]) & set(chars["val"])
    assert not set(chars["val"]) & set(chars["test"])
    recs = manifest["classes"]
    train_faces = {r["typeface"] for r in recs["train"]}
    test_faces = {r["typeface"] for r in recs["test"]}
    assert train_faces and test_faces and not train_faces & test_faces
    for split, allowed in (("train", chars["train"]), ("test", chars["test"]),
                           ("val/test", chars["val"])):
        for r in recs[split]:
            assert set(r["characters"]) <= set(allowed) and len(r["characters"]) >= 3
    # The class is the typeface: each class folder is one face of the manifest.
    assert all(r["typeface"] in manifest["typefaces"] for r in recs["train"] + recs["test"])
    # Same seed, same images; the stroke-weight augmentation is off by default.
    again = make_suite.build_typefaces(str(tmp_path / "tf2"), seed=1, image_size=12,
                                       fonts_dir=hebrew_fonts_dir, **TINY["typeface"])
    assert again["images_sha256"] == manifest["images_sha256"]
    assert manifest["flags"]["max_stroke"] == 0


def test_cli_rejects_unknown_benchmark_and_names_the_flag(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "study", "make_suite.py"),
                        f"--output_dir={tmp_path / 'out'}", "--benchmarks=cars"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO),
                       timeout=120)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("make_suite.py: error: --benchmarks") and "typeface" in last
    assert not (tmp_path / "out").exists()


def test_a_suite_json_it_did_not_write_is_refused_and_left_alone(tmp_path, fonts_dir):
    out = tmp_path / "suite"
    out.mkdir()
    foreign = '{"benchmarks": {"mine": 1}}'
    (out / "suite.json").write_text(foreign)
    with pytest.raises(make_glyphs.GlyphError, match="not written by make_suite.py"):
        make_suite.build_suite(str(out), ["cross_script"], seed=0, image_size=12,
                               fonts_dir=fonts_dir, overrides=TINY)
    assert (out / "suite.json").read_text() == foreign
    assert sorted(os.listdir(out)) == ["suite.json"]
    (out / "suite.json").write_text('{"written_by": "sst_tf make_suite", "benchm')
    with pytest.raises(make_glyphs.GlyphError, match="is not valid JSON"):
        make_suite.build_suite(str(out), ["cross_script"], seed=0, image_size=12,
                               fonts_dir=fonts_dir, overrides=TINY)
