"""scripts/prepare_data.py on tiny fake archives in the official formats."""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import fakedata
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import prepare_data  # noqa: E402

from sst_tf.datasets import common  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SST_TF_CACHE_DIR", str(tmp_path / "cache"))


def _tgz(src_dir, member, out):
    with tarfile.open(out, "w:gz") as t:
        t.add(os.path.join(src_dir, member), arcname=member)


def test_cub_archive_unpacked_and_verified(tmp_path):
    fakedata.make_cub(str(tmp_path / "src"), per_class=2)
    os.makedirs(tmp_path / "dl")
    _tgz(tmp_path / "src", "CUB_200_2011", tmp_path / "dl" / "CUB_200_2011.tgz")
    data = str(tmp_path / "data")
    ds = prepare_data.prepare("cub", str(tmp_path / "dl"), data, check_counts=False)
    assert (len(ds.train), len(ds.test)) == (6, 6)
    assert os.path.isfile(os.path.join(data, "CUB_200_2011", "images.txt"))
    assert [p for p in os.listdir(data) if p.startswith(".extract")] == []
    # Official counts are checked by default: the fake archive is far too small.
    with pytest.raises(common.DatasetLayoutError, match="found 6 images in 3 classes, "
                       "expected 5864"):
        prepare_data.prepare("cub", str(tmp_path / "dl"), data)


def test_cars_and_sop_archives(tmp_path):
    src, dl = tmp_path / "src", tmp_path / "dl"
    fakedata.make_cars(str(src / "cars"), per_class=2)
    fakedata.make_sop(str(src / "sop"), per_class=2)
    os.makedirs(dl)
    _tgz(src / "cars", "car_ims", dl / "car_ims.tgz")
    shutil.copy(src / "cars" / "cars_annos.mat", dl)
    with zipfile.ZipFile(dl / "Stanford_Online_Products.zip", "w") as z:
        for root, _, files in os.walk(src / "sop"):
            for f in files:
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, src / "sop"))
    cars = prepare_data.prepare("cars196", str(dl), str(tmp_path / "c"), check_counts=False)
    assert (len(cars.train), len(cars.test)) == (6, 6)
    sop = prepare_data.prepare("sop", str(dl), str(tmp_path / "s"), check_counts=False)
    assert (len(sop.train), len(sop.test)) == (6, 6)


def test_missing_and_broken_archives_are_named(tmp_path):
    os.makedirs(tmp_path / "dl")
    (tmp_path / "dl" / "car_ims.tgz").write_bytes(b"")
    with pytest.raises(prepare_data.PrepareError, match="not a readable archive"):
        prepare_data.prepare("cars196", str(tmp_path / "dl"), str(tmp_path / "d"))
    # Through the command line: one line naming the missing file, exit status 2.
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "prepare_data.py"), "--dataset=cub",
         f"--archives={tmp_path / 'dl'}", f"--data_dir={tmp_path / 'd'}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "prepare_data.py: error: missing" in proc.stderr
    assert f"missing {tmp_path / 'dl' / 'CUB_200_2011.tgz'}" in proc.stderr
