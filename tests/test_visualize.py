import numpy as np
import pytest
from PIL import Image

from sst_tf import visualize as vz


def clustered(n=40, seed=0):
    """Four classes in blobs, with some points put into the wrong blob."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    centers = rng.normal(scale=5.0, size=(4, 6))
    blob = labels.copy()
    blob[:6] = (labels[:6] + 1) % 4  # these sit among another class
    emb = centers[blob] + rng.normal(size=(n, 6))
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return emb.astype(np.float32), labels, images


def brute_neighbors(emb, q, k):
    d = np.array([np.sum((emb[q].astype(np.float64) - e) ** 2) for e in emb])
    d[q] = np.inf
    return list(np.argsort(d, kind="stable")[:k])


def test_retrieval_grid_borders_match_labels(tmp_path):
    emb, labels, images = clustered()
    thumb, border, gap, q, k = 8, 3, 4, 10, 4
    grid, info = vz.retrieval_grid(
        emb, labels, images, num_queries=q, k=k, thumb=thumb, border=border, gap=gap, seed=1
    )
    cell = thumb + 2 * border
    width = gap + (k + 1) * cell + k * gap + 2 * gap + gap
    height = gap + q * cell + (q - 1) * gap + gap
    path = vz.save_png(grid, str(tmp_path / "grid.png"))
    back = np.asarray(Image.open(path).convert("RGB"))
    assert back.shape == (height, width, 3)
    seen = {True: 0, False: 0}
    for row, query in enumerate(info["queries"]):
        want = brute_neighbors(emb, query, k)
        assert list(info["neighbors"][row]) == want
        top = gap + row * (cell + gap)
        assert tuple(back[top + 1, gap + 1]) == vz.QUERY_COLOR
        np.testing.assert_array_equal(
            back[top + border : top + border + thumb, gap + border : gap + border + thumb],
            images[query],
        )
        for col, j in enumerate(want, start=1):
            left = gap + col * (cell + gap) + 2 * gap
            same = bool(labels[j] == labels[query])
            seen[same] += 1
            expected = vz.SAME_COLOR if same else vz.OTHER_COLOR
            for y, x in [(top, left), (top + cell - 1, left + cell - 1), (top + cell // 2, left)]:
                assert tuple(back[y, x]) == expected
    assert seen[True] and seen[False]  # the data exercise both colours


def test_tsne_figure_size_and_content(tmp_path):
    emb, labels, images = clustered(n=30)
    pts = vz.tsne_2d(emb, seed=0, max_iter=250)
    assert pts.shape == (30, 2) and np.isfinite(pts).all()
    np.testing.assert_allclose(vz.tsne_2d(emb, seed=0, max_iter=250), pts)  # seeded
    for thumbs in (None, images):
        path = vz.tsne_figure(pts, labels, str(tmp_path / "t.png"), images=thumbs, size_px=300)
        im = np.asarray(Image.open(path).convert("RGB"))
        assert im.shape == (300, 300, 3)
        assert (im != 255).any(axis=-1).mean() > 0.01  # something drawn
    with pytest.raises(ValueError, match="at least 5"):
        vz.tsne_2d(emb[:3])


def test_write_figures(tmp_path):
    emb, labels, images = clustered(n=24)
    paths = vz.write_figures(
        str(tmp_path / "fig"), emb, labels, images, tsne_points=20, tsne_iter=250
    )
    assert Image.open(paths["retrieval"]).size[0] > 0
    assert Image.open(paths["tsne"]).size == (1200, 1200)
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        ".sst_tf", "retrieval.png", "tsne.png"]  # the marker: a folder sst_tf may rewrite
