"""absl flags derived from a configuration dataclass, and the dataclass back from them.

Each field declares its flag with `sst_tf.config.flag_field` (help text,
choices). `define_flags` defines one flag per field, its kind taken from the
field's type:

* ``bool`` -> ``DEFINE_bool``; ``int`` -> ``DEFINE_integer``; ``float`` ->
  ``DEFINE_float`` (``X | None``: the same flag, unset by default);
* ``str`` -> ``DEFINE_string``, or ``DEFINE_enum`` for a choice field with
  ``enum_flag`` (a plain string choice lists its choices at the front of its
  help, as absl does for an enum, and is checked by the config's `validate`);
* ``tuple[int, ...]`` -> ``DEFINE_list`` (comma-separated integers).

`config_values` reads the parsed flags back into ``{field name: value}``.
Both take the ``FlagValues`` to use: only entry points touch absl's global
``FLAGS``. The flags count as the calling module's own (its `--help` lists
them), as if it had defined them itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from absl import flags

# Flags defined here belong to the module calling `define_flags`.
flags.disclaim_key_flags()

_INT_TUPLE = tuple[int, ...]


def _flag_type(hint: Any) -> Any:
    """The type of a field's flag: `hint` without its ``| None``."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def flag_default(field: dataclasses.Field) -> Any:
    """The default of a field's flag: its ``flag_default``, else the field's default.

    A required field (no default) gets None; an integer tuple its items as strings,
    as ``DEFINE_list`` holds them.
    """
    default = field.metadata.get("flag_default", field.default)
    if default is dataclasses.MISSING:
        return None
    if isinstance(default, tuple):
        return [str(item) for item in default]
    return default


def define_flags(config_cls: type, flag_values: flags.FlagValues) -> None:
    """Defines one absl flag per field of `config_cls` (see the module docstring).

    Args:
      config_cls: a dataclass whose fields were declared with `flag_field`.
      flag_values: where to define them (absl's ``flags.FLAGS`` in an entry point).

    Raises:
      TypeError: a field without help text, or of a type no flag kind fits.
    """
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        meta = field.metadata
        if "help" not in meta:
            raise TypeError(f"{config_cls.__name__}.{field.name} declares no flag: "
                            "declare it with sst_tf.config.flag_field(help=...).")
        name, default, help_text = field.name, flag_default(field), meta["help"]
        kind = _flag_type(hints[field.name])
        choices = list(meta.get("choices", ()))
        if kind is str and choices and meta.get("enum_flag"):
            flags.DEFINE_enum(name, default, choices, help_text, flag_values=flag_values)
        elif kind is str:
            if choices:
                help_text = f"<{'|'.join(choices)}>: {help_text}"
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        elif kind == _INT_TUPLE:
            flags.DEFINE_list(name, default, help_text, flag_values=flag_values)
        else:
            raise TypeError(f"{config_cls.__name__}.{name}: no flag kind for type {kind}.")


def config_values(config_cls: type, flag_values: flags.FlagValues) -> dict:
    """The parsed flags of `config_cls`'s fields, as ``{field name: value}``.

    Integer lists become tuples of ints; every other value is the flag's as
    parsed (a ``flag_default`` of None stays None for the caller to derive).

    Raises:
      ValueError: an integer list with an item that is not an integer, naming
        the flag.
    """
    hints = typing.get_type_hints(config_cls)
    values = {}
    for field in dataclasses.fields(config_cls):
        value = flag_values[field.name].value
        if _flag_type(hints[field.name]) == _INT_TUPLE:
            try:
                value = tuple(int(item) for item in value)
            except ValueError as e:
                raise ValueError(f"--{field.name} must be integers, got {value}.") from e
        values[field.name] = value
    return values


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def parse_overrides(text: str, config_cls: type, flag: str = "--variant") -> tuple[str, dict]:
    """``NAME:field=value,...`` as (NAME, {field: value typed like the field}).

    The study scripts' ``--variant`` values: configuration fields set for one
    arm of a comparison. Integer-tuple fields take their items separated by
    ``;`` (``recall_ks=1;5``).

    Raises:
      ValueError: no name, an unknown field, or a value of the wrong type,
        naming `flag`.
    """
    name, _, rest = text.partition(":")
    if not name:
        raise ValueError(f"{flag} needs a name before ':', got {text!r}.")
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls)}
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if key not in names:
            raise ValueError(f"{flag} {name}: unknown field {key!r}.")
        if not sep:
            raise ValueError(f"{flag} {name}: {key} needs a value ({key}=VALUE).")
        kind = _flag_type(hints[key])
        try:
            if kind is bool:
                if value.lower() not in _TRUE + _FALSE:
                    raise ValueError(value)
                overrides[key] = value.lower() in _TRUE
            elif kind == _INT_TUPLE:
                overrides[key] = tuple(int(v) for v in value.split(";"))
            else:
                overrides[key] = kind(value)
        except ValueError:
            expected = "integers separated by ;" if kind == _INT_TUPLE else kind.__name__
            raise ValueError(f"{flag} {name}: {key}={value!r}, expected {expected}.") from None
    return name, overrides
