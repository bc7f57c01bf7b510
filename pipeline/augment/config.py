"""``AugmentConfig``: the catalog's ``augment:`` section (pydantic v2, frozen, extra keys forbidden).

Each list item is dispatched on its ``name`` to that transform's parameter model through
the registry. The dispatch is a wrap validator rather than pydantic's discriminated union,
because a discriminated union puts the tag into the error path
(``waveform.1.pitch_shift.min_semitones``); here the path is the catalog's own key path
(``augment.waveform.1.min_semitones`` once the catalog model nests this one under
``augment``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

from pipeline.augment import registry
from pipeline.augment._params import StepParams


def _error(loc: tuple, kind: str, message: str, value: Any) -> ValidationError:
    detail: InitErrorDetails = {"type": PydanticCustomError(kind, message), "loc": loc, "input": value}
    return ValidationError.from_exception_data("augment step", [detail])


def _dispatcher(section: str, table: Mapping[str, Any], other: Mapping[str, Any], other_section: str):
    def validate(value: Any, handler: Any) -> StepParams:
        if isinstance(value, StepParams):
            entry = table.get(value.name)
            if entry is not None and isinstance(value, entry.params_type):
                return value
            value = value.model_dump()
        if not isinstance(value, Mapping):
            raise _error((), "augment_step", f"each {section} step is a mapping like {{name: ..., p: ...}}", value)
        name = value.get("name")
        if name is None:
            raise _error(("name",), "missing", f"missing key name: one of {sorted(table)}", value)
        entry = table.get(name)
        if entry is None:
            hint = f"; {name!r} is a {other_section} transform: move it under {other_section}" if name in other else ""
            raise _error(
                ("name",), "unknown_transform", f"unknown {section} transform {name!r}: expected one of {sorted(table)}{hint}", name
            )
        return entry.params_type.model_validate(dict(value))

    return validate


WaveformStep = Annotated[
    SerializeAsAny[StepParams],
    WrapValidator(_dispatcher("waveform", registry.WAVEFORM_TRANSFORMS, registry.SPEC_TRANSFORMS, "spec")),
]
SpecStep = Annotated[
    SerializeAsAny[StepParams],
    WrapValidator(_dispatcher("spec", registry.SPEC_TRANSFORMS, registry.WAVEFORM_TRANSFORMS, "waveform")),
]


class AugmentConfig(BaseModel):
    """The ``augment:`` section of ``catalog.yaml``.

    Attributes
    ----------
    copies : int >= 0
        Augmented copies made of every example of an augmented split (0: augmentation off).
        The original (copy 0) is always kept; copies are numbered 1..copies.
    splits : tuple of str
        Splits that get copies (default ``("train",)``); never augment evaluation splits.
    waveform : tuple of transform parameters
        Waveform transforms, applied in order, each with its probability ``p``.
    spec : tuple of transform parameters
        SpecAugment masks applied in order to the copy's computed features.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    copies: int = Field(0, ge=0)
    splits: tuple[Annotated[str, Field(min_length=1)], ...] = ("train",)
    waveform: tuple[WaveformStep, ...] = ()
    spec: tuple[SpecStep, ...] = ()
