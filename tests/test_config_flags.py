"""Flags derived from TrainConfig's fields: one flag per field, same defaults, same choices."""

import dataclasses

import pytest
from absl import flags

from sst_tf import config_flags, loss_registry
from sst_tf import train as train_cli
from sst_tf.config import (
    BACKBONES,
    DATA_SOURCES,
    KMEANS_METHODS,
    LOSSES,
    NEIGHBORHOODS,
    NPAIRS_PAIRS,
    PRECISIONS,
    REFRESH_MODES,
    SAMPLERS,
    SST_IMPOSTERS,
    STRATEGIES,
    TrainConfig,
    flag_field,
)

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Flags of sst_tf.train that are not TrainConfig fields.
ENTRY_POINT_FLAGS = {"dry_run"}
# Every choice field with its tuple, and whether absl (enum) or validate() rejects other values.
CHOICES = {
    "loss": (LOSSES, False), "sampler": (SAMPLERS, False), "backbone": (BACKBONES, False),
    "data_source": (DATA_SOURCES, True), "sst_imposters": (SST_IMPOSTERS, True),
    "neighborhoods": (NEIGHBORHOODS, True), "strategy": (STRATEGIES, True),
    "mixed_precision": (PRECISIONS, True), "refresh": (REFRESH_MODES, True),
    "kmeans": (KMEANS_METHODS, True), "npairs_pairs": (NPAIRS_PAIRS, True),
}


def _fresh_flags():
    flag_values = flags.FlagValues()
    config_flags.define_flags(TrainConfig, flag_values)
    return flag_values


def _parse(*argv):
    flag_values = _fresh_flags()
    flag_values(["prog", "--model_dir=m", *argv])
    return flag_values


def test_train_defines_one_flag_per_field_and_dry_run():
    train_flags = {f.name for f in flags.FLAGS.flags_by_module_dict()[train_cli.__name__]}
    assert train_flags == set(FIELDS) | ENTRY_POINT_FLAGS


def test_every_flag_default_is_the_fields_default():
    # The flag's own default, field by field; three differ in form only.
    derived = {"model_dir": None,  # required field: no default
               "resize_size": None,  # unset: image_size * 256 / 224 (train.config_from_flags)
               "recall_ks": ["1", "2", "4", "8"]}  # DEFINE_list holds strings
    for name, field in FIELDS.items():
        want = derived[name] if name in derived else field.default
        assert flags.FLAGS[name].default == want, name
    # And the config built from flags left unset is the dataclass's default one.
    flags.FLAGS(["sst_tf.train", "--model_dir=m"])
    try:
        assert train_cli.config_from_flags() == TrainConfig(model_dir="m")
    finally:
        flags.FLAGS.unparse_flags()


def test_every_field_has_help_text():
    for name, field in FIELDS.items():
        assert field.metadata["help"].strip(), name
        assert flags.FLAGS[name].help.endswith(field.metadata["help"]), name


def test_choice_fields_are_exactly_the_known_ones():
    declared = {name for name, f in FIELDS.items() if f.metadata["choices"]}
    assert declared == set(CHOICES)
    for name, (choices, enum_flag) in CHOICES.items():
        assert FIELDS[name].metadata["choices"] is choices, name
        assert FIELDS[name].metadata["enum_flag"] is enum_flag, name


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_choice_flag_accepts_exactly_its_tuple(name):
    choices, enum_flag = CHOICES[name]
    flag = flags.FLAGS[name]
    if enum_flag:
        assert isinstance(flag, flags.EnumFlag) and flag.parser.enum_values == list(choices)
    else:
        assert not isinstance(flag, flags.EnumFlag)
        assert flag.help.startswith(f"<{'|'.join(choices)}>: ")
    for value in choices:
        extra = ["--dataset=cub"] if value == "tfds" else []  # TFDS has no digits builder
        if name in loss_registry.PARAM_FLAGS:  # a loss's own option: with that loss
            extra.append(f"--loss={loss_registry.PARAM_FLAGS[name][0][0]}")
        values = config_flags.config_values(TrainConfig, _parse(f"--{name}={value}", *extra))
        assert values[name] == value
        TrainConfig(**{**values, "resize_size": 256}).validate()
    if enum_flag:
        with pytest.raises(flags.IllegalFlagValueError, match="value should be one of"):
            _parse(f"--{name}=bogus")
    else:
        config = TrainConfig(model_dir="m", **{name: "bogus"})
        with pytest.raises(ValueError) as e:
            config.validate()
        assert str(e.value) == f"--{name} must be one of {'|'.join(choices)}, got 'bogus'."


def test_config_values_special_cases():
    values = config_flags.config_values(TrainConfig, _parse("--recall_ks=1,10"))
    assert values["recall_ks"] == (1, 10) and values["resize_size"] is None
    with pytest.raises(ValueError, match=r"^--recall_ks must be integers, got \['a', '1'\]\.$"):
        config_flags.config_values(TrainConfig, _parse("--recall_ks=a,1"))


@pytest.mark.parametrize("argv,resize", [([], 256), (["--image_size=32"], 37),
                                         (["--image_size=32", "--resize_size=40"], 40),
                                         (["--image_size=8"], 9)])
def test_unset_resize_size_follows_image_size(argv, resize):
    flags.FLAGS(["sst_tf.train", "--model_dir=m", *argv])
    try:
        assert train_cli.config_from_flags().resize_size == resize
    finally:
        flags.FLAGS.unparse_flags()


def test_a_field_without_a_flag_declaration_is_refused():
    @dataclasses.dataclass
    class Undeclared:
        size: int = 3

    with pytest.raises(TypeError, match="Undeclared.size declares no flag"):
        config_flags.define_flags(Undeclared, flags.FlagValues())

    @dataclasses.dataclass
    class Unsupported:
        sizes: dict = flag_field(None, help="No flag kind for a dict.")

    with pytest.raises(TypeError, match="Unsupported.sizes: no flag kind"):
        config_flags.define_flags(Unsupported, flags.FlagValues())


def test_flags_belong_to_the_calling_module():
    flag_values = _fresh_flags()
    assert {f.name for f in flag_values.flags_by_module_dict()[__name__]} == set(FIELDS)


def test_parse_overrides_types_each_value_like_its_field():
    name, got = config_flags.parse_overrides(
        "arm:loss=triplet,margin=0.1,normalize=true,epochs=3,pretrained=no,"
        "sampler=class_balanced,recall_ks=1;5", TrainConfig)
    assert name == "arm"
    assert got == {"loss": "triplet", "margin": 0.1, "normalize": True, "epochs": 3,
                   "pretrained": False, "sampler": "class_balanced", "recall_ks": (1, 5)}
    assert type(got["epochs"]) is int and type(got["margin"]) is float
    assert config_flags.parse_overrides("empty:", TrainConfig) == ("empty", {})


@pytest.mark.parametrize("text, message", [
    (":loss=sst", "--variant needs a name before ':'"),
    ("a:no_such_field=1", "--variant a: unknown field 'no_such_field'"),
    ("a:epochs=three", "--variant a: epochs='three', expected int"),
    ("a:normalize=maybe", "--variant a: normalize='maybe', expected bool"),
    ("a:margin", "--variant a: margin needs a value"),
    ("a:recall_ks=1;x", "--variant a: recall_ks='1;x', expected integers separated by ;"),
])
def test_parse_overrides_names_the_flag_on_bad_input(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config_flags.parse_overrides(text, TrainConfig)
