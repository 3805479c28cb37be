"""scripts/benchmarks/pml.py: the project's side of the comparison with pytorch-metric-learning."""

import numpy as np
from _scripts import load_script

load_script("benchmark")  # puts scripts/ on the path
from benchmarks import pml, pml_side  # noqa: E402

from sst_tf import loss_registry  # noqa: E402


def test_each_kind_of_shared_loss_is_timed_here_on_the_peers_batch():
    x, labels = pml_side.batch_inputs(8, 4)
    assert x.shape == (8, 4) and x.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 1, 1, 1])
    assert set(pml.SHARED) <= set(loss_registry.LOSSES)
    assert {peer for _, _, peer, _ in pml.ROWS} == set(pml.SHARED)
    # A loss of the batch alone, one with proxies, one with class weights.
    for name in ("triplet_semihard", "proxy_anchor", "subcenter_arcface",
                 "npairs:pairs=per_class"):
        r = pml._loss_child(f"{name},8,4,1")
        assert r["runs"] == 1 and np.isfinite(r["ms"]) and r["ms"] > 0, name
