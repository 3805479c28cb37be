"""Unpacks the official archives of CUB, CARS196 and SOP and verifies the layout.

Download the archives yourself (links in docs/reproduction.md, "1. Get the data"),
put them in one folder, then for example::

    python scripts/prepare_data.py --dataset=cub --archives=~/Downloads --data_dir=data/cub

| dataset | files expected in --archives | layout written to --data_dir |
|---|---|---|
| cub | CUB_200_2011.tgz | CUB_200_2011/ |
| cars196 | car_ims.tgz, cars_annos.mat | car_ims/, cars_annos.mat |
| sop | Stanford_Online_Products.zip | Stanford_Online_Products/ |

Each archive is extracted into a temporary folder inside --data_dir and moved
into place only when complete, so an interrupted run leaves no half tree; an
existing layout is kept. Then the reader verifies it: official image and class
counts, every listed image present, and (unless --nocheck_images) that every
image decodes (the result is cached for training). Otherwise one line,
``prepare_data.py: error: ...``, names the missing file, the unreadable archive
or the wrong count, with exit status 2 (1 when writing fails, e.g. a full disk).
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import zipfile

from absl import flags, logging

# Run as `python scripts/prepare_data.py` from a checkout: import sst_tf from it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
PROG = "prepare_data.py"


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines the flags (only when run as a program, so tests can import this file)."""
    flags.DEFINE_enum("dataset", None, ["cub", "cars196", "sop"], "Data set to prepare.",
                      flag_values=fv)
    flags.DEFINE_string("archives", ".", "Folder holding the downloaded archive files.",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Folder to unpack into (pass it as --data_dir to train).",
                        flag_values=fv)
    flags.DEFINE_bool("check_counts", True, "Check the official image and class counts.",
                      flag_values=fv)
    flags.DEFINE_bool("check_images", True, "Decode every image once (cached for training).",
                      flag_values=fv)

# dataset -> [(archive file, what it unpacks to (a folder or the file itself))]
ARCHIVES = {
    "cub": [("CUB_200_2011.tgz", "CUB_200_2011")],
    "cars196": [("car_ims.tgz", "car_ims"), ("cars_annos.mat", "cars_annos.mat")],
    "sop": [("Stanford_Online_Products.zip", "Stanford_Online_Products")],
}
# Where the files were published (they move; see docs/reproduction.md).
SOURCES = {
    "cub": "https://www.vision.caltech.edu/datasets/cub_200_2011/",
    "cars196": "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (car_ims.tgz, "
               "cars_annos.mat; mirrors exist, e.g. on Kaggle)",
    "sop": "https://cvgl.stanford.edu/projects/lifted_struct/",
}


class PrepareError(RuntimeError):
    """A missing archive, an archive without the expected content, or a bad layout."""


def _extract(archive: str, member: str, data_dir: str) -> None:
    """Extracts `archive` (tgz/zip) and moves its top folder `member` into `data_dir`."""
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=data_dir)
    try:
        logging.info("Extracting %s ...", archive)
        if archive.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    name = os.path.normpath(info.filename)
                    if name.startswith(("..", "/")) or os.path.isabs(name):
                        raise PrepareError(f"{archive}: unsafe member path {info.filename!r}")
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        found = os.path.join(tmp, member)
        if not os.path.isdir(found):
            top = sorted(os.listdir(tmp))
            raise PrepareError(f"{archive} does not contain the folder {member}/ (it holds {top}).")
        os.replace(found, os.path.join(data_dir, member))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise PrepareError(f"{archive} is not a readable archive: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(dataset: str, archives: str, data_dir: str, check_counts: bool = True,
            check_images: bool = True):
    """Unpacks `dataset`'s archives from `archives` into `data_dir` and verifies it.

    Args:
      dataset: `cub`, `cars196` or `sop`.
      archives: folder with the downloaded files.
      data_dir: target folder (created).
      check_counts: check the official counts.
      check_images: decode every image once.

    Returns:
      The loaded `sst_tf.data.Dataset`.

    Raises:
      PrepareError: naming the missing file or the problem.
      DatasetLayoutError: from the reader (wrong counts, missing images).
    """
    for filename, target in ARCHIVES[dataset]:  # every archive there before anything is written
        src = os.path.join(archives, filename)
        if os.path.exists(os.path.join(data_dir, target)):
            continue
        if not os.path.isfile(src):
            raise PrepareError(
                f"missing {src}: download {filename} from {SOURCES[dataset]} into {archives}."
            )
        readable = (zipfile.is_zipfile(src) if filename.endswith(".zip") else
                    tarfile.is_tarfile(src) if filename.endswith((".tgz", ".tar.gz", ".tar"))
                    else True)
        if not readable:
            raise PrepareError(f"{src} is not a readable archive (truncated or not the "
                               f"published {filename}?)")
    os.makedirs(data_dir, exist_ok=True)
    for filename, target in ARCHIVES[dataset]:
        dest = os.path.join(data_dir, target)
        if os.path.exists(dest):
            logging.info("%s exists; kept.", dest)
            continue
        src = os.path.join(archives, filename)
        if filename.endswith((".tgz", ".tar.gz", ".tar", ".zip")):
            _extract(src, target, data_dir)
        else:
            shutil.copyfile(src, dest + ".tmp")
            os.replace(dest + ".tmp", dest)
    from sst_tf.datasets import cars196, cub, sop

    reader = {"cub": cub, "cars196": cars196, "sop": sop}[dataset]
    return reader.load(data_dir, expected_counts="official" if check_counts else None,
                       check_images=check_images)


@cli.entry_point(PROG, tensorflow=True)
def main(argv):
    """Prepares --dataset in --data_dir and prints what was found."""
    cli.check_usage(argv, FLAGS, required=["dataset", "data_dir"])
    from sst_tf.datasets.common import DatasetLayoutError

    archives = os.path.expanduser(FLAGS.archives)
    data_dir = os.path.expanduser(FLAGS.data_dir)
    if not os.path.isdir(archives):
        raise cli.UsageError(f"--archives={FLAGS.archives} is not a folder")
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise cli.UsageError(f"--data_dir={FLAGS.data_dir} is a file, not a folder")
    try:
        ds = prepare(FLAGS.dataset, archives, data_dir, FLAGS.check_counts, FLAGS.check_images)
    except (PrepareError, DatasetLayoutError) as e:
        raise cli.UsageError(str(e)) from e
    except OSError as e:  # the disk or a permission, not the archives
        raise cli.RunError(f"writing into --data_dir={FLAGS.data_dir} failed: {e}") from e
    print(f"{FLAGS.dataset} ready in {FLAGS.data_dir}: train {len(ds.train)} images / "
          f"{ds.train.num_classes} classes, test {len(ds.test)} images / "
          f"{ds.test.num_classes} classes. Train with --data_dir={FLAGS.data_dir}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
