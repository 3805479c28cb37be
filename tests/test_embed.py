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


def test_embed_files_embeds_the_rest_of_a_batch_together(tmp_path):
    paths = write_images(tmp_path, n=4)
    calls = []

    def picky_embed(encoded):
        calls.append(len(encoded))
        bad = {i: "not a decodable image" for i, b in enumerate(encoded) if b == b"bad"}
        if bad:
            raise embed.UndecodableImagesError(bad)
        return fake_embed(encoded)

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"bad")
    kept, emb, failed = embed.embed_files(picky_embed, [paths[0], str(bad)] + paths[1:],
                                          batch_size=5, progress=False)
    assert kept == paths and [p for p, _ in failed] == [str(bad)]
    assert calls == [5, 4]  # the batch, then its 4 good files in one call
    np.testing.assert_allclose(emb, fake_embed([open(p, "rb").read() for p in paths]))


# -- a query embeds exactly as in the index --------------------------------------------------


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """The project's small CNN (random weights) with a flatten + dense head, 20 -> 16 px.

    The head's matrix product (2048 inputs) sums in an order that depends on
    the batch size: embedded in batches of 1, 5 or 12 an image's embedding
    differs by ~1e-6 of its norm, so the tests below see whether a query
    really goes through the same computation as its index row.
    """
    import keras

    from sst_tf import model as model_lib
    from sst_tf.export import PreprocessingSpec, export_saved_model

    keras.utils.set_random_seed(0)
    backbone = model_lib.build_model("small_cnn", weights=None, embedding_dim=8,
                                     image_size=16).get_layer(model_lib.BACKBONE_LAYER)
    inputs = keras.Input((16, 16, 3))
    x = model_lib.preprocessing("small_cnn")(inputs)
    x = keras.layers.Dense(8)(keras.layers.Flatten()(backbone(x)))
    return export_saved_model(keras.Model(inputs, x), str(tmp_path_factory.mktemp("small") /
                                                          "export"),
                              PreprocessingSpec(image_size=16, resize_size=20), verify=False)


@pytest.fixture(scope="module")
def every_format(tmp_path_factory):
    """Two random images per extension the embed tool reads, of assorted sizes."""
    from sst_tf.datasets.common import IMAGE_EXTENSIONS

    folder = tmp_path_factory.mktemp("formats")
    rng = np.random.default_rng(3)
    for ext in IMAGE_EXTENSIONS:
        for i in range(2):
            h, w = rng.integers(18, 40, 2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                folder / f"{ext[1:]}{i}{ext}")
    return embed.list_images(str(folder))


@pytest.mark.parametrize("batch_size", [1, 5, 12])  # 12: the whole index; 5: a short last batch
def test_a_query_embeds_to_its_own_index_row(small_export, every_format, tmp_path, batch_size):
    from sst_tf.search import search_results

    assert len(every_format) == 12
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff truncated")
    embedder = embed.Embedder(small_export, batch_size=batch_size)
    kept, index, failed = embed.embed_files(embedder, every_format + [str(broken)], batch_size,
                                            progress=False)
    assert kept == every_format and [p for p, _ in failed] == [str(broken)]
    norms = np.linalg.norm(index, axis=1)
    assert norms.min() > 0 and len(np.unique(index.round(4), axis=0)) == 12
    data = [open(p, "rb").read() for p in every_format]
    alone = np.concatenate([embedder([b]) for b in data])
    # The query goes through a pass of the shape its index row did: equal to float32
    # round-off (bit for bit on some CPUs; where the kernels block by row position,
    # a row's place in the batch moves the last bits).
    np.testing.assert_allclose(alone, index, rtol=1e-4, atol=1e-7)
    # Whatever batch-mates it has and wherever it sits among them.
    mixed = embedder([data[3], data[0], data[7]])
    np.testing.assert_allclose(mixed, index[[3, 0, 7]], rtol=1e-4, atol=1e-7)
    results = search_results(every_format, alone, kept, index, top_k=2)
    for r, n in zip(results, norms, strict=True):
        assert r["neighbors"][0]["path"] == r["query"]
        assert r["neighbors"][0]["distance"] <= 1e-6 * n
        assert r["neighbors"][1]["distance"] > 1e-3 * n


def test_batch_size_changes_embeddings_only_by_round_off(small_export, every_format):
    data = [open(p, "rb").read() for p in every_format]
    one = embed.Embedder(small_export, batch_size=1)(data)
    for bs in (5, 12):
        other = embed.Embedder(small_export, batch_size=bs)(data)
        rel = np.linalg.norm(other - one, axis=1) / np.linalg.norm(one, axis=1)
        assert rel.max() < 1e-5


def test_embedder_names_undecodable_positions(small_export):
    png = io.BytesIO()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(png, "PNG")
    embedder = embed.Embedder(small_export, batch_size=2)
    with pytest.raises(embed.UndecodableImagesError) as e:
        embedder([png.getvalue(), b"GIF89a garbage", png.getvalue(), b""])
    assert sorted(e.value.reasons) == [1, 3]
    assert embedder([]).shape == (0, 8)
    with pytest.raises(ValueError, match="batch_size"):
        embed.Embedder(small_export, batch_size=0)


def test_progress_bar_is_plain_text_off_a_terminal(capsys):
    bar = embed._progress_bar(5)
    for i in range(5):
        bar.update(i + 1)
    out = capsys.readouterr().out  # captured: not a terminal
    assert "5/5" in out and "\x1b" not in out and "\r" not in out
