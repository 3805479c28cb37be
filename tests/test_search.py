import os

import numpy as np
import pytest

from sst_tf import search
from sst_tf.search import chunked_top_k, search_results


def brute_force(q, x, k):
    d = np.array([[float(np.sum((a.astype(np.float64) - b) ** 2)) for b in x] for a in q])
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


@pytest.mark.parametrize("qc, ic", [(3, 7), (256, 32768), (1, 1), (50, 13)])
def test_chunked_top_k_matches_brute_force(qc, ic):
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(11, 5)), rng.normal(size=(40, 5))
    d, i = chunked_top_k(q, x, 6, query_chunk=qc, index_chunk=ic)
    want_d, want_i = brute_force(q, x, 6)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rerank_floats", [1 << 24, 1000])  # 1000: the exact step in blocks
def test_a_vector_in_the_index_is_at_distance_zero(monkeypatch, rerank_floats):
    # Embedding-sized vectors (norm ~500): |q|^2 - 2 q.x + |x|^2 alone cancels to
    # a few float32 ulps of 250,000, i.e. distances up to ~0.4 between identical rows.
    monkeypatch.setattr(search, "_RERANK_FLOATS", rerank_floats)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(200, 64)) * 500 / 8).astype(np.float32)
    d, i = chunked_top_k(x, x, 3, query_chunk=64, index_chunk=50)
    np.testing.assert_array_equal(i[:, 0], np.arange(200))
    np.testing.assert_array_equal(d[:, 0], 0.0)
    want_d, want_i = brute_force(x, x, 3)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-5)


def test_k_larger_than_index_and_ties():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    d, i = chunked_top_k(np.zeros((1, 2)), x, 10, index_chunk=2)
    assert i.shape == (1, 4)
    # Two exact zeros and two at distance 1: ties go to the lower index.
    np.testing.assert_array_equal(i[0], [0, 3, 1, 2])
    np.testing.assert_allclose(d[0], [0, 0, 1, 1])


def test_bad_shapes():
    with pytest.raises(ValueError, match="must be"):
        chunked_top_k(np.zeros((2, 3)), np.zeros((4, 2)), 1)
    with pytest.raises(ValueError, match="k must be"):
        chunked_top_k(np.zeros((2, 3)), np.zeros((4, 3)), 0)


def test_search_results_distances_are_euclidean():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]], np.float32)
    res = search_results(["q"], x[:1], ["a", "b", "c"], x, top_k=2)
    assert res[0]["query"] == "q"
    assert [n["path"] for n in res[0]["neighbors"]] == ["a", "c"]
    assert [n["rank"] for n in res[0]["neighbors"]] == [1, 2]
    np.testing.assert_allclose([n["distance"] for n in res[0]["neighbors"]], [0.0, 1.0])


@pytest.mark.slow
def test_cli_embed_then_search_finds_the_query_itself(tmp_path, capsys, monkeypatch):
    import json
    import subprocess
    import sys

    import keras
    from PIL import Image

    from sst_tf.export import PreprocessingSpec, export_saved_model

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    model = keras.Model(inp, keras.layers.Dense(8)(keras.layers.Flatten()(inp)))
    export_dir = export_saved_model(
        model, str(tmp_path / "export"), PreprocessingSpec(image_size=16)
    )
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            folder / f"im{i}.{'png' if i % 2 else 'jpg'}"
        )
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated garbage")
    index = tmp_path / "emb.npz"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sst_tf.embed",
            f"--export_dir={export_dir}",
            f"--images={folder}",
            f"--output={index}",
            "--batch_size=3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "wrote 8 embeddings of size 8" in r.stdout and "skipped 1" in r.stdout
    z = np.load(index)
    assert list(z["failed"]) == [str(folder / "broken.jpg")]
    assert int(z["batch_size"]) == 3  # the queries are embedded in batches of 3 too
    norm = float(np.linalg.norm(z["embeddings"][list(z["paths"]).index(str(folder / "im3.png"))]))

    query = folder / "im3.png"
    out = tmp_path / "res.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "sst_tf.search",
            f"--index={index}",
            f"--query={query}",
            "--top_k=3",
            f"--output={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert len(res) == 1 and len(res[0]["neighbors"]) == 3
    first = res[0]["neighbors"][0]
    # In the index im3.png shared a batch with im2 and im4; alone it is padded to 3.
    assert first["path"] == str(query) and first["distance"] <= 1e-6 * norm
    assert str(query) in r.stdout.splitlines()[1]

    # The index records which model built it: a copy of the export (moved,
    # renamed) is the same model, and search accepts it as --export_dir.
    import shutil

    from sst_tf.embed import Embedder

    copy = shutil.copytree(export_dir, tmp_path / "moved_export")
    np.testing.assert_allclose(z["fingerprint"], Embedder(str(copy)).fingerprint(), atol=1e-6)
    code, out = _search([f"--index={index}", f"--query={query}", f"--export_dir={copy}",
                         "--json"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)[0]["neighbors"][0]["path"] == str(query)


def test_a_threshold_marks_matches_and_queries_without_one():
    results = search_results(["q0", "q1"], np.array([[0.0, 0.0], [5.0, 5.0]]), ["a", "b"],
                             np.array([[0.0, 0.5], [0.0, 2.0]]), top_k=2)
    search.apply_threshold(results, 1.0)
    assert results[0]["match"] and [nb["match"] for nb in results[0]["neighbors"]] == [True, False]
    assert not results[1]["match"] and results[1]["threshold"] == 1.0
    table = search.format_table(results)
    assert "q0  (match within 1.0000)" in table and "q1  (no match within 1.0000)" in table


def _search(argv, capsys, monkeypatch):
    """sst_tf.search in this process; (exit code, stdout)."""
    from _entry_points import run_main

    code, out, _ = run_main(search, argv, capsys, monkeypatch)
    return code, out


def test_search_with_a_calibrated_threshold_answers_no_match_for_an_absent_class(tmp_path, capsys,
                                                                                monkeypatch):
    """An export that records thresholds; an index of two colours; a third colour matches none."""
    import json

    import keras
    from PIL import Image

    from sst_tf import embed
    from sst_tf.export import PreprocessingSpec, export_saved_model

    inp = keras.Input((16, 16, 3))
    mean = keras.layers.GlobalAveragePooling2D()(inp)  # an image's mean colour (0..255)
    export_dir = export_saved_model(keras.Model(inp, mean), str(tmp_path / "export"),
                                    PreprocessingSpec(image_size=16),
                                    metadata={"thresholds": {"best_f1": 10.0}})
    colours = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}
    rng = np.random.default_rng(0)
    for name, rgb in colours.items():
        (tmp_path / name).mkdir()
        for i in range(3):
            pixels = np.clip(np.array(rgb) + rng.integers(-3, 4, (20, 20, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / name / f"{i}.png")
    embedder = embed.Embedder(export_dir)
    paths = embed.list_images(f"{tmp_path}/[rg]*/*.png")  # red and green: the index
    kept, emb, _ = embed.embed_files(embedder, paths, progress=False)
    index = str(tmp_path / "index.npz")
    embed.save_index(index, kept, emb, export_dir, fingerprint=embedder.fingerprint())
    out = {}
    for query in ("red", "blue"):
        code, text = _search([f"--index={index}", f"--query={tmp_path / query}",
                              "--threshold=best_f1", "--json"], capsys, monkeypatch)
        assert code == 0
        out[query] = json.loads(text)
    assert all(q["match"] and q["threshold"] == 10.0 for q in out["red"])
    assert not any(q["match"] for q in out["blue"])  # a class absent from the index
