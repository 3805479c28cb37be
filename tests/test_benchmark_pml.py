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


def test_pml_computes_with_the_registry_parameters_of_each_shared_loss():
    assert set(pml_side.CLASSES) == set(pml.SHARED)
    for name in pml.SHARED:
        kwargs = pml.pml_kwargs(name)
        assert set(kwargs) == {"loss", "miner"}, name
        assert (pml_side.CLASSES[name][1] is not None) or not kwargs["miner"], name
    for name in loss_registry.MARGIN_LOSSES:
        loss = pml.pml_kwargs(name)["loss"]
        assert loss["scale"] == loss_registry.loss_params(name)["scale"], name
        assert loss["margin"] == loss_registry.spec(name).margin, name
    sub_centers = loss_registry.loss_params("subcenter_arcface")["sub_centers"]
    assert pml.pml_kwargs("subcenter_arcface")["loss"]["sub_centers"] == int(sub_centers)
    for name in ("supcon", "ntxent"):
        temperature = loss_registry.loss_params(name)["temperature"]
        assert pml.pml_kwargs(name)["loss"] == {"temperature": temperature}
    assert pml.pml_kwargs("triplet_semihard")["miner"]["type_of_triplets"] == "semihard"
