"""A sweep's search space: `FIELD=SPEC` for any TrainConfig field, checked before any trial starts.

SPEC is a range `LOW..HIGH` (`:log` for a log scale), or choices `A,B,C` (widths: `16/64/64,32/128/128`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

from cifar_core.config import TrainConfig

FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
NOT_SEARCHED = ("preset",)  # a trial's preset is the sweep's


class SpaceError(ValueError):
    """A search space that cannot be searched: unknown field, empty or reversed range, bad value."""


@dataclasses.dataclass(frozen=True)
class Dimension:
    field: str
    low: Optional[float] = None  # a range ...
    high: Optional[float] = None
    log: bool = False
    choices: Optional[tuple[Union[int, float, str, bool], ...]] = None  # ... or choices (as Optuna stores them)
    integer: bool = False

    @property
    def spec(self) -> str:
        if self.choices is not None:
            return f"{self.field}={','.join(str(c) for c in self.choices)}"
        return f"{self.field}={_num(self.low)}..{_num(self.high)}" + (":log" if self.log else "")

    def suggest(self, trial) -> Any:
        """This dimension's value for an Optuna trial, as TrainConfig takes it."""
        if self.choices is not None:
            return to_config_value(self.field, trial.suggest_categorical(self.field, list(self.choices)))
        if self.integer:
            return trial.suggest_int(self.field, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.field, float(self.low), float(self.high), log=self.log)


def _num(value: Optional[float]) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind(field: str) -> str:
    """int, float, bool, str or widths: what TrainConfig's field holds."""
    if field == "widths":
        return "widths"
    default = getattr(TrainConfig(), field)
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int) or field in ("train_subset", "test_subset"):
        return "int"
    if isinstance(default, float):
        return "float"
    return "str"


def to_config_value(field: str, stored: Any) -> Any:
    """A value as Optuna stores it -> TrainConfig's type (widths are stored as '16/64/64')."""
    if field == "widths" and isinstance(stored, str):
        return tuple(int(v) for v in stored.split("/"))
    return stored


def _parse_value(field: str, text: str) -> Union[int, float, str, bool]:
    kind, text = _kind(field), text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if kind == "widths":
            widths = tuple(int(v) for v in text.split("/"))
            if len(widths) != 3:
                raise ValueError(text)
            return "/".join(map(str, widths))
    except ValueError:
        raise SpaceError(f"{field}: {text!r} is not {'an integer' if kind == 'int' else 'a number' if kind == 'float' else 'valid'}"
                         + (" (widths are written 16/64/64)" if kind == "widths" else "")) from None
    return text


def _check(base: TrainConfig, field: str, value: Any) -> None:
    try:
        base.replace(**{field: to_config_value(field, value)})
    except (ValueError, TypeError) as exc:
        raise SpaceError(f"{field}={value}: {exc}") from None


def parse_dimension(text: str, base: Optional[TrainConfig] = None) -> Dimension:
    """One `FIELD=SPEC`; every value it can produce is checked by TrainConfig (with `base`'s other fields)."""
    base = base or TrainConfig()
    field, sep, spec = text.partition("=")
    field, spec = field.strip().replace("-", "_"), spec.strip()
    if not sep or not field:
        raise SpaceError(f"{text!r}: write FIELD=SPEC, e.g. learning_rate=1e-4..1e-1:log")
    if field not in FIELDS or field in NOT_SEARCHED:
        raise SpaceError(f"unknown field {field!r}; searchable: {', '.join(f for f in FIELDS if f not in NOT_SEARCHED)}")
    if not spec:
        raise SpaceError(f"{field}: no values given")
    kind = _kind(field)
    if ".." in spec:
        if kind not in ("int", "float"):
            raise SpaceError(f"{field} takes choices (A,B,C), not a range")
        body, _, scale = spec.partition(":")
        if scale not in ("", "log"):
            raise SpaceError(f"{field}: unknown scale {scale!r} (only :log)")
        low_text, _, high_text = body.partition("..")
        low, high = _parse_value(field, low_text), _parse_value(field, high_text)
        if not low < high:
            raise SpaceError(f"{field}: the range {low_text}..{high_text} is empty or reversed (write LOW..HIGH)")
        if scale == "log" and low <= 0:
            raise SpaceError(f"{field}: a log range must stay above zero, got {low_text}..{high_text}")
        for value in (low, high):
            _check(base, field, value)
        return Dimension(field, low, high, log=scale == "log", integer=kind == "int")
    choices = tuple(_parse_value(field, v) for v in spec.split(",") if v.strip())
    if not choices:
        raise SpaceError(f"{field}: no values given")
    if len(set(choices)) != len(choices):
        raise SpaceError(f"{field}: a choice is listed twice")
    for value in choices:
        _check(base, field, value)
    return Dimension(field, choices=choices)


def parse_space(texts: list[str], base: Optional[TrainConfig] = None) -> list[Dimension]:
    dims = [parse_dimension(t, base) for t in texts]
    fields = [d.field for d in dims]
    if len(set(fields)) != len(fields):
        raise SpaceError(f"a field is searched twice: {', '.join(sorted(f for f in fields if fields.count(f) > 1))}")
    return dims


def grid(dims: list[Dimension]) -> dict[str, list[Any]]:
    """The grid sampler's search space; only choices can be laid on a grid."""
    ranges = [d.field for d in dims if d.choices is None]
    if ranges:
        raise SpaceError(f"the grid sampler needs choices, not ranges: {', '.join(ranges)} (or use tpe or random)")
    return {d.field: list(d.choices) for d in dims}
