"""Output folders: markers, and what a command may write into or replace."""

import json
import os

import pytest

from sst_tf import outputs as ad
from sst_tf.cli import UsageError


def test_new_and_empty_folders_are_free(tmp_path):
    assert ad.check_output_dir(str(tmp_path / "new"), "--out", "export") is False
    (tmp_path / "empty").mkdir()
    assert ad.check_output_dir(str(tmp_path / "empty"), "--out", "export") is False


def test_user_files_are_refused(tmp_path):
    (tmp_path / "f.txt").write_text("mine")
    with pytest.raises(UsageError, match="--out=F is a file"):
        ad.check_output_dir(str(tmp_path / "f.txt"), "--out=F", "export")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write"):
        ad.check_output_dir(str(tmp_path / "d"), "--out=D", "export", replace_ours=True)
    assert (tmp_path / "d" / "a.txt").read_text() == "mine"


def test_our_folders_by_marker_or_legacy_content(tmp_path):
    d = tmp_path / "e"
    d.mkdir()
    (d / "x").write_text("")
    ad.write_marker(str(d), "export", "test")
    assert json.loads((d / ad.MARKER).read_text()) == {
        "format": 1, "kind": "export", "written_by": "test"}
    assert ad.check_output_dir(str(d), "--out=E", "export") is True
    with pytest.raises(UsageError, match="pass --overwrite"):
        ad.check_output_dir(str(d), "--out=E", "export", replace_ours=False)
    with pytest.raises(UsageError, match="holds an sst_tf export, not a figures"):
        ad.check_output_dir(str(d), "--out=E", "figures")
    old = tmp_path / "old"
    old.mkdir()
    (old / "retrieval.png").write_bytes(b"")
    legacy = lambda f: "figures" if os.listdir(f) == ["retrieval.png"] else None  # noqa: E731
    assert ad.check_output_dir(str(old), "--out", "figures", legacy=legacy) is True
    (old / ad.MARKER).write_text("not json")  # an unreadable marker counts as none
    assert ad.read_marker(str(old)) is None


def test_output_files(tmp_path):
    p = tmp_path / "r.json"
    assert ad.check_output_file(str(p), "--output", lambda _: False) is False
    p.write_text("[]")
    assert ad.check_output_file(str(p), "--output", lambda _: True) is True
    with pytest.raises(UsageError, match="not written by sst_tf"):
        ad.check_output_file(str(p), "--output=R", lambda _: False)
    with pytest.raises(UsageError, match="is a folder"):
        ad.check_output_file(str(tmp_path), "--output=T", lambda _: True)


def test_read_json_object_names_what_led_to_a_damaged_file(tmp_path):
    good = tmp_path / "metrics.json"
    ad.write_json_atomic(str(good), {"before": {}})
    assert ad.read_json_object(str(good), "--model_dir=R") == {"before": {}}
    (tmp_path / "cut.json").write_text('{"before": ')
    with pytest.raises(ValueError) as e:
        ad.read_json_object(str(tmp_path / "cut.json"), "--model_dir=R")
    assert str(e.value).startswith(f"--model_dir=R: {tmp_path / 'cut.json'} is not valid JSON (")
    assert str(e.value).endswith("): truncated or edited by hand?")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="^--model_dir=R: .*list.json does not hold a JSON obj"):
        ad.read_json_object(str(tmp_path / "list.json"), "--model_dir=R")


def test_unwritable_parent_is_refused(tmp_path, monkeypatch):
    """A read-only file system (as os.access reports it, root included) or a file below."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(ad.os, "access",
                        lambda p, mode: False if str(p) == str(ro) else real_access(p, mode))
    with pytest.raises(UsageError, match=f"--model_dir=R cannot be created: {ro} is not "
                                         "writable"):
        ad.check_output_dir(str(ro / "run" / "deeper"), "--model_dir=R", "model_dir")
    with pytest.raises(UsageError, match="--model_dir=R is not writable"):
        ad.check_output_dir(str(ro), "--model_dir=R", "model_dir")
    (tmp_path / "f").write_text("mine")
    with pytest.raises(UsageError, match="cannot be created: .*/f is a file, not a folder"):
        ad.check_output_dir(str(tmp_path / "f" / "run"), "--model_dir=R", "model_dir")
    assert not (ro / "run").exists() and (tmp_path / "f").read_text() == "mine"
