"""Builds a zero-shot glyph benchmark: characters of non-Latin scripts in many typefaces.

Each class is one character; its images are that character rendered in the
installed typefaces that really have a glyph for it, with a little random
rotation, scaling, offset and stroke weight. By default the training classes
come from Hangul, Arabic, Devanagari and Malayalam and the test classes from
Thai and Hebrew, so test classes are different characters of different
scripts. A validation split holds out some training classes (different
characters of the training scripts) for tuning. Latin, Greek and Cyrillic are
never used.

Install the fonts (Debian), then build::

    apt-get install -y fonts-thai-tlwg culmus fonts-nanum fonts-unfonts-core ...
    python study/make_glyphs.py --output_dir=/data/glyphs

The output is two `--dataset=folder` data sets::

    OUT/train/<script>_<code point>/0000.png ...   training classes
    OUT/test/<script>_<code point>/...             test classes (unseen)
    OUT/val/train/...  OUT/val/test/...            training classes split in two
    OUT/manifest.json                              flags, classes, typefaces

The same flags and installed fonts give the same images. An existing
non-empty --output_dir is replaced only if this program wrote it (it holds
manifest.json with this program's marker); the new tree is built next to it
and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata

import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageDraw, ImageFont

# Run as `python study/make_glyphs.py` from a checkout: import sst_tf from it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sst_tf import outputs  # noqa: E402

PROG = "make_glyphs.py"
MARKER = "sst_tf make_glyphs"
FLAGS = flags.FLAGS

# The 19 initial consonants and 21 vowels of Hangul: syllables without a final.
_HANGUL_OPEN = [0xAC00 + (lead * 21 + vowel) * 28 for lead in range(19) for vowel in range(21)]

# Script -> candidate code points (letters only: no combining marks, digits or signs).
SCRIPTS: dict[str, list[int]] = {
    "thai": list(range(0x0E01, 0x0E2F)),                     # consonants ko kai .. ho nokhuk
    "hebrew": list(range(0x05D0, 0x05EB)),                   # alef .. tav, with final forms
    "hangul": list(range(0x3131, 0x3164)) + _HANGUL_OPEN,    # compatibility jamo + open syllables
    "arabic": list(range(0x0621, 0x063B)) + list(range(0x0641, 0x064B)),  # hamza .. yeh
    "devanagari": list(range(0x0904, 0x0915)) + list(range(0x0915, 0x093A)),  # vowels, consonants
    "malayalam": list(range(0x0D05, 0x0D15)) + list(range(0x0D15, 0x0D3B)),   # vowels, consonants
    # CJK ideographs (the first 4,096 of the block; the Korean typefaces draw the
    # Hanja among them): the pretraining source of study/make_suite.py.
    "han": list(range(0x4E00, 0x5E00)),
}
SCRIPT_SETS = {script: set(codes) for script, codes in SCRIPTS.items()}
# Debian packages with typefaces for each script (the error message names them).
PACKAGES: dict[str, list[str]] = {
    "thai": ["fonts-thai-tlwg", "fonts-arundina"],
    "hebrew": ["culmus"],
    "hangul": ["fonts-nanum", "fonts-unfonts-core", "fonts-unfonts-extra", "fonts-alee",
               "fonts-baekmuk"],
    "arabic": ["fonts-kacst", "fonts-arabeyes"],
    "devanagari": ["fonts-deva-extra", "fonts-lohit-deva", "fonts-gargi", "fonts-nakula",
                   "fonts-sahadeva", "fonts-samyak-deva", "fonts-sarai", "fonts-sil-annapurna"],
    "malayalam": ["fonts-smc", "fonts-lohit-mlym"],
    "han": ["fonts-nanum", "fonts-unfonts-core", "fonts-unfonts-extra", "fonts-baekmuk"],
}
# Blocks reserved for an independent check: never rendered here.
RESERVED_BLOCKS = [(0x0000, 0x024F), (0x0370, 0x052F), (0x1C80, 0x1C8F), (0x1D00, 0x1FFF),
                   (0x2C60, 0x2C7F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F), (0xA720, 0xA7FF),
                   (0xAB30, 0xAB6F), (0xFB00, 0xFB06)]
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc", ".otc")
RENDER_SIZE = 96     # glyphs are drawn at this pixel size, then scaled down
CHECK_SIZE = 32      # size of the check that tells real glyphs from blanks and boxes


def define_flags() -> None:
    """Defines the flags (only when run as a program, so tests can import this file)."""
    flags.DEFINE_string("output_dir", None, "Folder to write (created; see the module doc).")
    flags.DEFINE_integer("seed", 0, "Seed of the class choice and the augmentation.")
    flags.DEFINE_integer("images_per_class", 50, "Images rendered per class.")
    flags.DEFINE_integer("num_train_classes", 80, "Training classes (from --train_scripts).")
    flags.DEFINE_integer("num_test_classes", 50, "Test classes (from --test_scripts).")
    flags.DEFINE_integer("num_val_classes", 20,
                         "Training classes held out as val/test; the rest are val/train.")
    flags.DEFINE_integer("image_size", 32, "Side of the square images in pixels.")
    flags.DEFINE_list("train_scripts", ["hangul", "arabic", "devanagari", "malayalam"],
                      f"Scripts of the training classes: {', '.join(SCRIPTS)}.")
    flags.DEFINE_list("test_scripts", ["thai", "hebrew"], "Scripts of the test classes.")
    flags.DEFINE_integer("min_fonts", 6,
                         "A character is used only if at least this many typefaces have it.")
    flags.DEFINE_string("fonts_dir", None,
                        "Read the fonts under this folder instead of asking fontconfig (fc-list).")
    flags.DEFINE_float("max_rotation", 12.0, "Largest rotation in degrees (uniform +-).")
    flags.DEFINE_float("min_scale", 0.6, "Smallest glyph size as a fraction of the image side.")
    flags.DEFINE_float("max_scale", 0.9, "Largest glyph size as a fraction of the image side.")
    flags.DEFINE_float("max_offset", 0.08, "Largest shift as a fraction of the image side.")
    flags.DEFINE_integer("max_stroke", 3, f"Largest extra stroke width at {RENDER_SIZE} px.")


class GlyphError(Exception):
    """A problem the user can fix (flags, fonts, output folder); exit status 2."""


def is_reserved(code: int) -> bool:
    """True for code points of the Latin, Greek and Cyrillic blocks."""
    return any(lo <= code <= hi for lo, hi in RESERVED_BLOCKS)


def _parse_charset(text: str) -> set[int]:
    """Code points of a fontconfig charset ('20-7e a0 ...')."""
    codes = set()
    for part in text.split():
        lo, _, hi = part.partition("-")
        try:
            codes.update(range(int(lo, 16), int(hi or lo, 16) + 1))
        except ValueError:
            continue
    return codes


def discover_fonts(fonts_dir: str | None) -> list[dict]:
    """Lists the font faces fontconfig knows (or finds under `fonts_dir`).

    Args:
      fonts_dir: a folder to scan (recursively, with fc-scan) instead of the
        installed fonts (fc-list).

    Returns:
      One {"path", "index", "name" ('Family Style'), "charset" (set of code
      points)} per face, sorted by path and index; named instances of variable
      fonts are left out.

    Raises:
      GlyphError: --fonts_dir is not a folder, or fontconfig is missing.
    """
    fmt = "%{file}\t%{index}\t%{family[0]}\t%{style[0]}\t%{charset}\n"
    if fonts_dir:
        if not os.path.isdir(fonts_dir):
            raise GlyphError(f"--fonts_dir={fonts_dir} is not a folder.")
        command = ["fc-scan", "--format", fmt, fonts_dir]
    else:
        command = ["fc-list", "--format", fmt]
    try:
        # fc-scan exits with 1 on a folder without fonts: that is an empty list.
        out = subprocess.run(command, check=not fonts_dir, capture_output=True,
                             text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise GlyphError(f"cannot list fonts with {command[0]} ({e}); install fontconfig: "
                         "apt-get install -y fontconfig") from e
    faces = {}
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) != 5 or not fields[1].isdigit() or int(fields[1]) >= 0x10000:
            continue
        path, index, family, style, charset = fields
        if path.lower().endswith(FONT_EXTENSIONS):
            faces[(path, int(index))] = {"path": path, "index": int(index),
                                         "name": f"{family} {style}".strip(),
                                         "charset": _parse_charset(charset)}
    return [faces[k] for k in sorted(faces)]


def _render_check(font: ImageFont.FreeTypeFont, ch: str) -> tuple[bytes, tuple] | None:
    """A small rendering of `ch` and its ink box, or None when it draws no ink.

    The box is relative to the pen position on the baseline.
    """
    img = Image.new("L", (CHECK_SIZE * 4, CHECK_SIZE * 4), 0)
    origin = CHECK_SIZE * 2
    ImageDraw.Draw(img).text((origin, origin), ch, fill=255, font=font, anchor="ls")
    box = img.getbbox()
    if box is None:
        return None
    rel = tuple(v - origin for v in box)
    return img.crop(box).tobytes() + bytes(str(rel), "ascii"), rel


def _reference_box(boxes: list[tuple]) -> list[float]:
    """The box most of a script's glyphs in one face fit in.

    Its sides are the 5th and 95th percentiles of the glyphs' ink boxes, at
    RENDER_SIZE, relative to the pen position on the baseline.
    """
    b = np.array(boxes, dtype=float) * (RENDER_SIZE / CHECK_SIZE)
    return [float(np.percentile(b[:, 0], 5)), float(np.percentile(b[:, 1], 5)),
            float(np.percentile(b[:, 2], 95)), float(np.percentile(b[:, 3], 95))]


def font_coverage(faces: list[dict], codes: set[int]) -> dict[str, dict]:
    """Which typeface really draws which of `codes`.

    A face draws a character when its character set has it and the rendering
    has ink and differs from the face's renderings of every other candidate
    (so placeholder boxes shared by many code points are left out). Faces
    with the same family and style name count once (the first by path).

    Args:
      faces: from `discover_fonts`.
      codes: candidate code points.

    Returns:
      {face name: {"path", "index", "codes": sorted code points, "boxes":
      {script: reference box}}}, faces without any of `codes` left out.
    """
    result = {}
    for face in faces:
        path, index, name = face["path"], face["index"], face["name"]
        have = sorted(codes & face["charset"])
        if not have or name in result:
            continue
        try:
            pil = ImageFont.truetype(path, CHECK_SIZE, index=index,
                                     layout_engine=ImageFont.Layout.BASIC)
        except OSError:
            continue
        renders = {c: _render_check(pil, chr(c)) for c in have}
        counts: dict[bytes, int] = {}
        for r in renders.values():
            if r is not None:
                counts[r[0]] = counts.get(r[0], 0) + 1
        good = [c for c in have if renders[c] is not None and counts[renders[c][0]] == 1]
        if not good:
            continue
        boxes = {}
        for script, script_codes in SCRIPT_SETS.items():
            drawn = [renders[c][1] for c in good if c in script_codes]
            if drawn:
                boxes[script] = _reference_box(drawn)
        result[name] = {"path": path, "index": index, "codes": good, "boxes": boxes}
    return result


def choose_classes(scripts: list[str], count: int, coverage: dict[str, dict],
                   min_fonts: int, rng: np.random.Generator, flag: str) -> list[tuple[str, int]]:
    """Picks `count` characters, spread evenly over `scripts`.

    Args:
      scripts: script names (keys of SCRIPTS).
      count: number of classes.
      coverage: from `font_coverage`.
      min_fonts: a character needs at least this many typefaces.
      rng: the class-choice generator.
      flag: the flag that asked for `count` (named in errors).

    Returns:
      (script, code point) pairs.

    Raises:
      GlyphError: a script without enough typefaces, or too few characters.
    """
    pools = []
    for script in scripts:
        n_faces = {c: 0 for c in SCRIPTS[script]}
        for face in coverage.values():
            for c in face["codes"]:
                if c in n_faces:
                    n_faces[c] += 1
        eligible = [c for c in SCRIPTS[script] if n_faces[c] >= min_fonts]
        if not eligible:
            best = max(n_faces.values())
            raise GlyphError(
                f"no {script} character is drawn by --min_fonts={min_fonts} typefaces "
                f"(at most {best} found); install the fonts: "
                f"apt-get install -y {' '.join(PACKAGES[script])}"
            )
        pools.append([(script, int(c)) for c in rng.permutation(eligible)])
    available = sum(len(p) for p in pools)
    if count > available:
        raise GlyphError(f"--{flag}={count} but {', '.join(scripts)} have only {available} "
                         f"characters drawn by --min_fonts={min_fonts} typefaces.")
    chosen: list[tuple[str, int]] = []
    while len(chosen) < count:           # round robin over the scripts
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop(0))
    return sorted(chosen, key=lambda sc: (sc[0], sc[1]))


def class_name(script: str, code: int) -> str:
    """Folder name of a class, e.g. 'thai_0E01'."""
    return f"{script}_{code:04X}"


class Renderer:
    """Draws one augmented image of a character in a given typeface."""

    def __init__(self, image_size: int, max_rotation: float, min_scale: float,
                 max_scale: float, max_offset: float, max_stroke: int):
        self.size = image_size
        self.max_rotation = max_rotation
        self.min_scale, self.max_scale = min_scale, max_scale
        self.max_offset = max_offset
        self.max_stroke = max_stroke
        self._fonts: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}

    def _font(self, path: str, index: int) -> ImageFont.FreeTypeFont:
        key = (path, index)
        if key not in self._fonts:
            self._fonts[key] = ImageFont.truetype(path, RENDER_SIZE, index=index,
                                                  layout_engine=ImageFont.Layout.BASIC)
        return self._fonts[key]

    def render(self, ch: str, path: str, index: int, box: list[float],
               rng: np.random.Generator) -> Image.Image:
        """White glyph on black (as in MNIST), `image_size` square, grey-scale.

        `box` is the face's reference box for the script (`_reference_box`):
        it, not the glyph's own ink, is scaled to a random fraction of the
        side, so glyphs keep their size and height relative to the others of
        their script (a yod stays small, a final nun long), while faces with
        small or large glyphs in their em square come out alike. The result
        is rotated and shifted by a random amount.
        """
        font = self._font(path, index)
        stroke = int(rng.integers(0, self.max_stroke + 1))
        angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
        scale = float(rng.uniform(self.min_scale, self.max_scale))
        shift = rng.uniform(-self.max_offset, self.max_offset, size=2) * self.size
        half = max(box[2] - box[0], box[3] - box[1]) / 2 + stroke
        origin = RENDER_SIZE * 2
        big = Image.new("L", (RENDER_SIZE * 4, RENDER_SIZE * 4), 0)
        ImageDraw.Draw(big).text((origin, origin), ch, fill=255, font=font, anchor="ls",
                                 stroke_width=stroke, stroke_fill=255)
        cx = origin + (box[0] + box[2]) / 2
        cy = origin + (box[1] + box[3]) / 2
        # A square of twice the reference box around its centre, so ink outside
        # the box (rare tall or wide glyphs) is kept.
        region = tuple(int(round(v)) for v in (cx - 2 * half, cy - 2 * half,
                                               cx + 2 * half, cy + 2 * half))
        side = max(1, int(round(2 * scale * self.size)))
        # Reduce to twice the final size, rotate there, then reduce again.
        glyph = big.crop(region).resize((2 * side, 2 * side), resample=Image.Resampling.BOX)
        glyph = glyph.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=0)
        glyph = glyph.resize((side, side), resample=Image.Resampling.BOX)
        canvas = Image.new("L", (self.size, self.size), 0)
        x = int(round((self.size - side) / 2 + shift[0]))
        y = int(round((self.size - side) / 2 + shift[1]))
        canvas.paste(glyph, (x, y))
        return canvas


def write_classes(out_dir: str, classes: list[tuple[str, int]], coverage: dict[str, dict],
                  renderer: Renderer, images_per_class: int, min_fonts: int,
                  seed: int) -> list[dict]:
    """Renders `images_per_class` images of each class into `out_dir/<class>/`.

    Each image picks a typeface uniformly among those drawing the character;
    its generator is seeded by (seed, code point, image number), so a class's
    images do not depend on which other classes were chosen.

    Returns:
      One manifest record per class.
    """
    records = []
    for script, code in classes:
        faces = sorted(name for name, face in coverage.items() if code in face["codes"])
        assert len(faces) >= min_fonts and not is_reserved(code)
        folder = os.path.join(out_dir, class_name(script, code))
        os.makedirs(folder)
        used: dict[str, int] = {}
        for i in range(images_per_class):
            rng = np.random.default_rng([seed, code, i])
            name = faces[int(rng.integers(len(faces)))]
            face = coverage[name]
            img = renderer.render(chr(code), face["path"], face["index"],
                                  face["boxes"][script], rng)
            img.save(os.path.join(folder, f"{i:04d}.png"), optimize=False)
            used[name] = used.get(name, 0) + 1
        records.append({"class": class_name(script, code), "script": script,
                        "char": chr(code), "name": unicodedata.name(chr(code), ""),
                        "typefaces_available": len(faces), "typefaces_used": used})
    return records


def _check_output_dir(output_dir: str) -> None:
    """Refuses a non-empty folder this program did not write."""
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise GlyphError(f"--output_dir={output_dir} exists and is not a folder.")
    if not os.listdir(output_dir):
        return
    manifest = os.path.join(output_dir, "manifest.json")
    try:
        with open(manifest) as f:
            ours = json.load(f).get("written_by") == MARKER
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise GlyphError(f"--output_dir={output_dir} is not empty and was not written by "
                         f"{PROG}; choose a new or empty folder.")


def build(output_dir: str, seed: int = 0, images_per_class: int = 50,
          num_train_classes: int = 80, num_test_classes: int = 50, num_val_classes: int = 20,
          image_size: int = 32, train_scripts: list[str] | None = None,
          test_scripts: list[str] | None = None, min_fonts: int = 6,
          fonts_dir: str | None = None, max_rotation: float = 12.0, min_scale: float = 0.6,
          max_scale: float = 0.9, max_offset: float = 0.08, max_stroke: int = 3) -> dict:
    """Builds the benchmark into `output_dir` (see the module doc).

    Returns:
      The manifest (also written to `output_dir/manifest.json`).

    Raises:
      GlyphError: bad flags, missing fonts, or a foreign non-empty output folder.
    """
    train_scripts = list(train_scripts or ["hangul", "arabic", "devanagari", "malayalam"])
    test_scripts = list(test_scripts or ["thai", "hebrew"])
    for flag, scripts in (("train_scripts", train_scripts), ("test_scripts", test_scripts)):
        unknown = [s for s in scripts if s not in SCRIPTS]
        if unknown or not scripts:
            raise GlyphError(f"--{flag}: unknown script(s) {unknown or '(none)'}; "
                             f"choose from {', '.join(SCRIPTS)}.")
    for flag, value, low in (("images_per_class", images_per_class, 2),
                             ("num_train_classes", num_train_classes, 2),
                             ("num_test_classes", num_test_classes, 2),
                             ("num_val_classes", num_val_classes, 0),
                             ("image_size", image_size, 8), ("min_fonts", min_fonts, 1)):
        if value < low:
            raise GlyphError(f"--{flag}={value} must be at least {low}.")
    if num_val_classes and num_train_classes - num_val_classes < 2:
        raise GlyphError(f"--num_val_classes={num_val_classes} leaves fewer than 2 of "
                         f"--num_train_classes={num_train_classes} for val/train.")
    if not 0 < min_scale <= max_scale <= 1:
        raise GlyphError("--min_scale and --max_scale must satisfy 0 < min <= max <= 1.")
    _check_output_dir(output_dir)

    start = time.time()
    codes = {c for s in set(train_scripts + test_scripts) for c in SCRIPTS[s]}
    assert not any(is_reserved(c) for c in codes)
    faces = discover_fonts(fonts_dir)
    coverage = font_coverage(faces, codes)
    logging.info("%d font faces, %d draw some candidate character (%.1f s).",
                 len(faces), len(coverage), time.time() - start)

    rng = np.random.default_rng(seed)
    shared = set(train_scripts) & set(test_scripts)
    if shared:  # the same script on both sides: still never the same character
        logging.warning("scripts %s are used for training and testing (different characters).",
                        sorted(shared))
    test = choose_classes(test_scripts, num_test_classes, coverage, min_fonts, rng,
                          "num_test_classes")
    taken = set(test)
    train_coverage = {n: dict(f, codes=[c for c in f["codes"]
                                        if not any((s, c) in taken for s in SCRIPTS)])
                      for n, f in coverage.items()}
    train = choose_classes(train_scripts, num_train_classes, train_coverage, min_fonts, rng,
                           "num_train_classes")
    val_test = sorted(train[int(i)] for i in rng.permutation(len(train))[:num_val_classes])
    val_train = [c for c in train if c not in val_test]

    renderer = Renderer(image_size, max_rotation, min_scale, max_scale, max_offset, max_stroke)
    tmp = outputs.temp_dir_for(output_dir)
    try:
        args = (coverage, renderer, images_per_class, min_fonts, seed)
        records = {"train": write_classes(os.path.join(tmp, "train"), train, *args),
                   "test": write_classes(os.path.join(tmp, "test"), test, *args)}
        for split, chosen in (("train", val_train), ("test", val_test)):
            os.makedirs(os.path.join(tmp, "val", split))
            for script, code in chosen:
                name = class_name(script, code)
                shutil.copytree(os.path.join(tmp, "train", name),
                                os.path.join(tmp, "val", split, name))
        manifest = {
            "written_by": MARKER,
            "flags": {"seed": seed, "images_per_class": images_per_class,
                      "num_train_classes": num_train_classes,
                      "num_test_classes": num_test_classes, "num_val_classes": num_val_classes,
                      "image_size": image_size, "train_scripts": train_scripts,
                      "test_scripts": test_scripts, "min_fonts": min_fonts,
                      "max_rotation": max_rotation, "min_scale": min_scale,
                      "max_scale": max_scale, "max_offset": max_offset,
                      "max_stroke": max_stroke},
            "counts": {"train": [len(train) * images_per_class, len(train)],
                       "test": [len(test) * images_per_class, len(test)],
                       "val/train": [len(val_train) * images_per_class, len(val_train)],
                       "val/test": [len(val_test) * images_per_class, len(val_test)]},
            "val_test_classes": [class_name(*c) for c in val_test],
            "typefaces": {n: {"path": f["path"], "index": f["index"]}
                          for n, f in sorted(coverage.items())},
            "classes": records,
            "images_sha256": images_fingerprint(tmp),
        }
        publish(tmp, output_dir, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("Wrote %s in %.1f s: %s", output_dir, time.time() - start, manifest["counts"])
    return manifest


def images_fingerprint(root: str) -> str:
    """SHA-256 of every file below `root` (relative folder, name and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            with open(os.path.join(dirpath, fn), "rb") as f:
                digest.update(os.path.relpath(dirpath, root).encode() + fn.encode())
                digest.update(f.read())
    return digest.hexdigest()


def publish(tmp: str, output_dir: str, manifest: dict) -> None:
    """Writes `manifest` into the finished temporary folder `tmp` and renames it to `output_dir`."""
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    outputs.replace_dir(tmp, output_dir)


def run_build(prog: str, argv: list[str], build_fn):
    """The programs' shared `main` frame: checks the arguments, runs `build_fn()`.

    Exits 2 (usage) on extra arguments, a missing --output_dir or a
    `GlyphError`, 1 on an `OSError`, each with ``PROG: error: ...``.

    Returns:
      What `build_fn` returns.
    """
    if len(argv) > 1:
        print(f"{prog}: error: unexpected arguments {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    if not FLAGS.output_dir:
        print(f"{prog}: error: --output_dir is required.", file=sys.stderr)
        sys.exit(2)
    try:
        return build_fn()
    except GlyphError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)


def main(argv):
    manifest = run_build(PROG, argv, lambda: build(
        FLAGS.output_dir, seed=FLAGS.seed, images_per_class=FLAGS.images_per_class,
        num_train_classes=FLAGS.num_train_classes, num_test_classes=FLAGS.num_test_classes,
        num_val_classes=FLAGS.num_val_classes, image_size=FLAGS.image_size,
        train_scripts=FLAGS.train_scripts, test_scripts=FLAGS.test_scripts,
        min_fonts=FLAGS.min_fonts, fonts_dir=FLAGS.fonts_dir,
        max_rotation=FLAGS.max_rotation, min_scale=FLAGS.min_scale,
        max_scale=FLAGS.max_scale, max_offset=FLAGS.max_offset, max_stroke=FLAGS.max_stroke))
    for split, (images, classes) in manifest["counts"].items():
        print(f"{split:<10} {classes:4d} classes {images:6d} images")
    print(f"--dataset=folder --data_dir={FLAGS.output_dir}   "
          f"(tuning: --data_dir={os.path.join(FLAGS.output_dir, 'val')})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
