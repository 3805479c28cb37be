import io
import os

import numpy as np
import pytest
from PIL import Image

from sst_tf import embed


def write_images(folder, n=5, size=12, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / ("sub" if i % 2 else "") / f"im{i}.{'png' if i % 2 else 'jpg'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def fake_embed(encoded):
    """Mean colour of each image; raises on undecodable bytes, like serve_jpeg."""
    out = []
    for b in encoded:
        im = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.float32)
        out.append(im.mean(axis=(0, 1)))
    return np.stack(out)


def test_list_images_folder_glob_and_missing(tmp_path):
    paths = write_images(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    assert embed.list_images(str(tmp_path)) == sorted(paths)
    assert embed.list_images(str(tmp_path / "**" / "*.png")) == sorted(
        p for p in paths if p.endswith(".png")
    )
    assert embed.list_images(paths[0]) == [paths[0]]
    with pytest.raises(FileNotFoundError, match="--images="):
        embed.list_images(str(tmp_path / "nothing*.jpg"))


def test_embed_files_skips_unreadable_and_garbage(tmp_path):
    paths = write_images(tmp_path, n=7)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    missing = str(tmp_path / "gone.png")
    os.symlink(str(tmp_path / "nowhere.png"), missing)  # broken link: open() fails
    todo = paths[:3] + [str(garbage)] + paths[3:] + [missing]
    kept, emb, failed = embed.embed_files(fake_embed, todo, batch_size=3, progress=False)
    assert kept == paths
    np.testing.assert_allclose(emb, fake_embed([open(p, "rb").read() for p in paths]))
    assert [p for p, _ in failed] == [str(garbage), missing]
    assert "unreadable" in failed[1][1]
    with pytest.raises(ValueError, match="batch_size"):
        embed.embed_files(fake_embed, paths, batch_size=0)


def test_index_round_trip(tmp_path):
    out = tmp_path / "idx" / "emb.npz"
    e = np.arange(6, dtype=np.float32).reshape(3, 2)
    embed.save_index(str(out), ["a", "b", "c"], e, "/x/export", ["bad"])
    got = embed.load_index(str(out))
    assert list(got["paths"]) == ["a", "b", "c"]
    np.testing.assert_array_equal(got["embeddings"], e)
    assert got["export_dir"] == "/x/export"
    assert os.listdir(out.parent) == ["emb.npz"]
    with pytest.raises(FileNotFoundError, match="--index="):
        embed.load_index(str(tmp_path / "none.npz"))
