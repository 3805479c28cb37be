"""Which training images go together: plans, neighbourhood rules and samplers.

* `plans`: the `EpochPlan` type, its statistics, and padding to the replicas.
* `neighborhoods`: every neighbourhood rule behind `neighborhood_groups`.
* `samplers`: the local, random and class-balanced samplers (`make_sampler`).

The names users need are re-exported here (`sampling.make_sampler`, ...).
"""

from sst_tf.sampling.neighborhoods import (
    NEIGHBORHOODS,
    balanced_neighborhoods,
    class_neighborhoods,
    effective_min_classes,
    mixed_neighborhoods,
    neighborhood_groups,
    original_neighborhoods,
)
from sst_tf.sampling.plans import (
    EpochPlan,
    batch_has_triplet,
    composition_statistics,
    pad_plan,
    plan_statistics,
    repeat_views,
)
from sst_tf.sampling.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    LocalSampler,
    MultiViewSampler,
    RandomSampler,
    make_sampler,
    refresh_due,
    refresh_sampler,
)

__all__ = [
    "NEIGHBORHOODS", "SAMPLERS", "ClassBalancedSampler", "EpochPlan", "LocalSampler",
    "MultiViewSampler", "RandomSampler", "balanced_neighborhoods", "batch_has_triplet",
    "class_neighborhoods",
    "composition_statistics", "effective_min_classes", "make_sampler", "mixed_neighborhoods",
    "neighborhood_groups", "original_neighborhoods", "pad_plan", "plan_statistics",
    "refresh_due", "refresh_sampler", "repeat_views",
]
