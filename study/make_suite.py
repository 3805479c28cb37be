"""Builds the zero-shot benchmark suite (and the pretraining source) from installed fonts.

Every benchmark is a `--dataset=folder` data set with its own validation split
cut from its training classes::

    OUT/<name>/train/<class>/0000.png ...   training classes
    OUT/<name>/test/...                     test classes (unseen)
    OUT/<name>/val/train/... val/test/...   training classes split in two
    OUT/<name>/manifest.json                flags, classes, typefaces, image hash
    OUT/suite.json                          which benchmarks, their counts and hashes

The benchmarks (study/docs/devbench.md has their sizes and untrained MAP@R):

  cross_script   characters of Hangul, Arabic, Devanagari, Malayalam for
                 training; Thai and Hebrew for testing (make_glyphs.py's defaults).
  within_script  characters of those six scripts on both sides, split at
                 random by class (a test class is a new character of a script
                 seen in training).
  typeface       fine-grained: the class is a typeface of Thai or Hebrew,
                 identified from characters it was not trained on; training
                 and test typefaces are disjoint, and so are the characters
                 their images show (no stroke-weight augmentation: weight is
                 part of a typeface).
  many_classes   in the spirit of Stanford Online Products: hundreds of
                 character classes, 5 images each; training classes of Hangul,
                 Arabic, Devanagari, Malayalam, test classes of Hangul (other
                 characters), Thai and Hebrew.
  pretrain       the source of the pretrained regime (study/pretrain.py):
                 CJK ideographs drawn by the Korean typefaces; no test set of
                 the suite has a Han character, and the typeface benchmark
                 leaves out every typeface that draws one.

Latin, Greek and Cyrillic are never rendered (make_glyphs.py refuses them).

    python study/make_suite.py --output_dir=data/suite
    python study/make_suite.py --output_dir=data/suite --benchmarks=typeface
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_glyphs  # noqa: E402

from sst_tf import outputs  # noqa: E402  (make_glyphs put the checkout on the path)

PROG = "make_suite.py"
SUITE_MARKER = "sst_tf make_suite"  # suite.json's written_by
FLAGS = flags.FLAGS
SIX = ["hangul", "arabic", "devanagari", "malayalam", "thai", "hebrew"]

# name -> make_glyphs.build arguments (the typeface benchmark has its own builder).
CHARACTER_BENCHMARKS: dict[str, dict] = {
    "cross_script": dict(),
    "within_script": dict(train_scripts=SIX, test_scripts=SIX, num_train_classes=120,
                          num_test_classes=60, num_val_classes=30),
    "many_classes": dict(train_scripts=["hangul", "arabic", "devanagari", "malayalam"],
                         test_scripts=["hangul", "thai", "hebrew"], images_per_class=5,
                         num_train_classes=300, num_test_classes=300, num_val_classes=100),
    "pretrain": dict(train_scripts=["han"], test_scripts=["han"], images_per_class=30,
                     num_train_classes=600, num_test_classes=50, num_val_classes=0),
}
TYPEFACE_DEFAULTS = dict(scripts=["thai", "hebrew"], images_per_class=40, test_share=0.5,
                         val_share=0.25, min_chars=5, max_rotation=6.0, max_stroke=0)
BENCHMARKS = ["cross_script", "within_script", "typeface", "many_classes", "pretrain"]


def define_flags() -> None:
    """Defines the flags (only when run as a program, so tests can import this file)."""
    flags.DEFINE_string("output_dir", None, "Folder of the suite (one sub-folder per benchmark).")
    flags.DEFINE_list("benchmarks", BENCHMARKS, f"Benchmarks to build: {', '.join(BENCHMARKS)}.")
    flags.DEFINE_integer("seed", 0, "Seed of the class choice and the augmentation.")
    flags.DEFINE_integer("image_size", 32, "Side of the square images in pixels.")
    flags.DEFINE_string("fonts_dir", None,
                        "Read the fonts under this folder instead of asking fontconfig.")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def build_typefaces(output_dir: str, seed: int = 0, scripts: list[str] | None = None,
                    images_per_class: int = 40, test_share: float = 0.5,
                    val_share: float = 0.25, min_chars: int = 5, image_size: int = 32,
                    fonts_dir: str | None = None, max_rotation: float = 6.0,
                    min_scale: float = 0.6, max_scale: float = 0.9, max_offset: float = 0.08,
                    max_stroke: int = 0) -> dict:
    """Builds the fine-grained benchmark: the class is a (script, typeface).

    Each script's characters are split at random into three disjoint sets:
    C_train (half of them: images of the training classes, val/train too),
    C_val (a quarter: images of val/test) and C_test (a quarter: images of the
    test classes). The typefaces drawing at
    least `min_chars` characters of each set are split at random by class:
    `test_share` of them test, of the rest `val_share` held out as val/test. A
    typeface that draws a Han character (the pretraining source) is left out.

    Returns:
      The manifest (also written to `output_dir/manifest.json`).

    Raises:
      make_glyphs.GlyphError: bad arguments, too few typefaces, or a foreign
        non-empty output folder.
    """
    scripts = list(scripts or TYPEFACE_DEFAULTS["scripts"])
    unknown = [s for s in scripts if s not in make_glyphs.SCRIPTS]
    if unknown or not scripts:
        raise make_glyphs.GlyphError(f"typeface scripts: unknown {unknown or '(none)'}.")
    if not 0 < test_share < 1 or not 0 <= val_share < 1:
        raise make_glyphs.GlyphError("test_share must be in (0, 1) and val_share in [0, 1).")
    make_glyphs._check_output_dir(output_dir)
    start = time.time()
    codes = {c for s in scripts for c in make_glyphs.SCRIPTS[s]}
    han = make_glyphs.SCRIPT_SETS["han"]
    faces = [f for f in make_glyphs.discover_fonts(fonts_dir) if not f["charset"] & han]
    coverage = make_glyphs.font_coverage(faces, codes)
    rng = np.random.default_rng(seed)
    char_sets: dict[str, dict[str, list[int]]] = {}
    classes: list[tuple[str, str]] = []     # (script, face name)
    for script in scripts:
        perm = [int(c) for c in rng.permutation(make_glyphs.SCRIPTS[script])]
        quarter = len(perm) // 4
        sets = {"train": sorted(perm[2 * quarter:]), "val": sorted(perm[:quarter]),
                "test": sorted(perm[quarter:2 * quarter])}
        char_sets[script] = sets
        for name, face in sorted(coverage.items()):
            drawn = set(face["codes"])
            if all(len(drawn & set(cs)) >= min_chars for cs in sets.values()):
                classes.append((script, name))
    if len(classes) < 4:
        raise make_glyphs.GlyphError(
            f"only {len(classes)} typefaces of {', '.join(scripts)} draw --min_chars={min_chars} "
            "characters of every split (4 needed); install the fonts: apt-get install -y "
            + " ".join(p for s in scripts for p in make_glyphs.PACKAGES[s]))
    order = [classes[int(i)] for i in rng.permutation(len(classes))]
    n_test = max(2, int(round(test_share * len(order))))
    test, train = sorted(order[:n_test]), sorted(order[n_test:])
    n_val = max(1, int(round(val_share * len(train)))) if val_share else 0
    val_test = sorted(train[int(i)] for i in rng.permutation(len(train))[:n_val])
    val_train = [c for c in train if c not in val_test]
    if len(train) < 2 or (n_val and len(val_train) < 2):
        raise make_glyphs.GlyphError(f"{len(classes)} typefaces are too few to split.")

    renderer = make_glyphs.Renderer(image_size, max_rotation, min_scale, max_scale, max_offset,
                                    max_stroke)

    def write(folder_root: str, chosen: list[tuple[str, str]], split: str) -> list[dict]:
        records = []
        for script, name in chosen:
            face = coverage[name]
            chars = sorted(set(face["codes"]) & set(char_sets[script][split]))
            cls = f"{script}_{_slug(name)}"
            folder = os.path.join(folder_root, cls)
            os.makedirs(folder)
            for i in range(images_per_class):
                key = int(hashlib.sha256(cls.encode()).hexdigest()[:8], 16)
                r = np.random.default_rng([seed, key, i])
                code = chars[int(r.integers(len(chars)))]
                img = renderer.render(chr(code), face["path"], face["index"],
                                      face["boxes"][script], r)
                img.save(os.path.join(folder, f"{i:04d}.png"), optimize=False)
            records.append({"class": cls, "script": script, "typeface": name,
                            "characters": "".join(chr(c) for c in chars)})
        return records

    tmp = outputs.temp_dir_for(output_dir)
    try:
        records = {"train": write(os.path.join(tmp, "train"), train, "train"),
                   "test": write(os.path.join(tmp, "test"), test, "test")}
        os.makedirs(os.path.join(tmp, "val", "train"))
        os.makedirs(os.path.join(tmp, "val", "test"))
        for script, name in val_train:
            cls = f"{script}_{_slug(name)}"
            shutil.copytree(os.path.join(tmp, "train", cls), os.path.join(tmp, "val", "train", cls))
        records["val/test"] = write(os.path.join(tmp, "val", "test"), val_test, "val")
        n = images_per_class
        manifest = {
            "written_by": make_glyphs.MARKER, "benchmark": "typeface",
            "flags": {"seed": seed, "scripts": scripts, "images_per_class": n,
                      "test_share": test_share, "val_share": val_share, "min_chars": min_chars,
                      "image_size": image_size, "max_rotation": max_rotation,
                      "min_scale": min_scale, "max_scale": max_scale, "max_offset": max_offset,
                      "max_stroke": max_stroke},
            "counts": {"train": [len(train) * n, len(train)], "test": [len(test) * n, len(test)],
                       "val/train": [len(val_train) * n, len(val_train)],
                       "val/test": [len(val_test) * n, len(val_test)]},
            "characters": {s: {k: "".join(map(chr, v)) for k, v in cs.items()}
                           for s, cs in char_sets.items()},
            "typefaces": {n_: {"path": f["path"], "index": f["index"]}
                          for n_, f in sorted(coverage.items())},
            "classes": records,
            "images_sha256": make_glyphs.images_fingerprint(tmp),
        }
        make_glyphs.publish(tmp, output_dir, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("Wrote %s in %.1f s: %s", output_dir, time.time() - start, manifest["counts"])
    return manifest


def build_suite(output_dir: str, benchmarks: list[str] | None = None, seed: int = 0,
                image_size: int = 32, fonts_dir: str | None = None,
                overrides: dict[str, dict] | None = None) -> dict:
    """Builds the named benchmarks into `output_dir/<name>/` and writes `suite.json`.

    Args:
      output_dir: the suite's folder (created).
      benchmarks: names from `BENCHMARKS` (default all).
      seed, image_size, fonts_dir: as make_glyphs.build.
      overrides: {name: arguments} replacing the benchmark's sizes (tests build
        tiny versions with it).

    Returns:
      {name: {"counts", "images_sha256"}} (also in suite.json, merged with the
      benchmarks built earlier into the same folder).

    Raises:
      make_glyphs.GlyphError: an unknown name, missing fonts, bad sizes.
    """
    benchmarks = list(benchmarks or BENCHMARKS)
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown or not benchmarks:
        raise make_glyphs.GlyphError(f"--benchmarks: unknown {unknown or '(none)'}; choose "
                                     f"from {', '.join(BENCHMARKS)}.")
    overrides = overrides or {}
    os.makedirs(output_dir, exist_ok=True)
    summary_path = os.path.join(output_dir, "suite.json")
    summary = {}
    if os.path.isfile(summary_path):
        try:
            earlier = outputs.read_json_object(summary_path, f"--output_dir={output_dir}")
        except ValueError as e:
            raise make_glyphs.GlyphError(str(e)) from e
        if earlier.get("written_by") != SUITE_MARKER:
            raise make_glyphs.GlyphError(
                f"--output_dir={output_dir}: {summary_path} was not written by {PROG}; "
                "choose another folder.")
        summary = earlier.get("benchmarks", {})
    for name in benchmarks:
        target = os.path.join(output_dir, name)
        if name == "typeface":
            args = dict(TYPEFACE_DEFAULTS, **overrides.get(name, {}))
            manifest = build_typefaces(target, seed=seed, image_size=image_size,
                                       fonts_dir=fonts_dir, **args)
        else:
            args = dict(CHARACTER_BENCHMARKS[name], **overrides.get(name, {}))
            manifest = make_glyphs.build(target, seed=seed, image_size=image_size,
                                         fonts_dir=fonts_dir, **args)
        summary[name] = {"counts": manifest["counts"], "images_sha256": manifest["images_sha256"]}
        print(f"{name}: " + ", ".join(f"{split} {c} classes {i} images"
                                      for split, (i, c) in manifest["counts"].items()))
    outputs.write_text_atomic(
        summary_path, json.dumps({"written_by": SUITE_MARKER, "benchmarks": summary}, indent=1))
    return summary


def main(argv):
    make_glyphs.run_build(PROG, argv, lambda: build_suite(
        FLAGS.output_dir, FLAGS.benchmarks, seed=FLAGS.seed, image_size=FLAGS.image_size,
        fonts_dir=FLAGS.fonts_dir))


if __name__ == "__main__":
    define_flags()
    app.run(main)
