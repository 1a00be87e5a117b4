"""The job spec's `structured_output.all_different` section: groups of output positions whose tokens must be
pairwise different values (a Sudoku's rows, columns and boxes), held at every denoising step and at the commit
by constraints/all_different.py around the section's regex / JSON Schema / choice constraint.

    structured_output:
      regex: "(.[1-9]){81}"
      all_different:
        groups: "sudoku.grid:canvas_groups"   # "module:function" returning the groups, or the lists
        values: ["1", "2", "3", "4", "5", "6", "7", "8", "9"]   # texts of one token each

A group is a list of output offsets (tokens from the first canvas' first position, as generation.pins counts
them: with a `grid` pin template, character i of the template is offset i). The section is checked when the
spec is (the callable imported); the groups and the values' tokens when a replica starts, before any row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

from pipeline.user_code import load_callable

if TYPE_CHECKING:
    from constraints.all_different import AllDifferentSpec


class AllDifferentSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: str | list[list[int]]
    values: list[str]

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: Any) -> Any:
        if isinstance(v, str):
            load_callable(v)  # raises ValueError: bad syntax, import error, not callable
        elif not v:
            raise ValueError("structured_output.all_different.groups: no group given")
        return v

    @field_validator("values")
    @classmethod
    def _values(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("structured_output.all_different.values: no value given")
        if len(set(v)) != len(v):
            raise ValueError(f"structured_output.all_different.values: a value repeats in {v}")
        return v

    def resolve(self, encode: Callable[[str], list[int]]) -> AllDifferentSpec:
        """The constraint's spec: the groups (the callable's, called with no argument) and each value's one
        token under `encode` (text -> token ids, no special tokens). ValueError naming what is wrong."""
        # imported here: constraints loads torch, which the driver checking a spec never needs (as
        # pipeline/backend.py imports it where used)
        from constraints.all_different import AllDifferentSpec

        where = "structured_output.all_different"
        groups = self.groups
        if isinstance(groups, str):
            try:
                groups = load_callable(groups)()
            except Exception as exc:  # noqa: BLE001 - the user's code: name it in the job's error
                why = f"{type(exc).__name__}: {exc}"
                raise ValueError(f"{where}.groups: {self.groups!r} raised {why}") from None
            if not isinstance(groups, (list, tuple)) or not all(isinstance(g, (list, tuple)) for g in groups):
                raise ValueError(f"{where}.groups: {self.groups!r} must return lists of output offsets")
        ids = []
        for text in self.values:
            toks = encode(text)
            if len(toks) != 1:
                raise ValueError(f"{where}.values: {text!r} is {len(toks)} tokens of this model's tokenizer, "
                                 "expected exactly one")
            ids.append(int(toks[0]))
        try:
            return AllDifferentSpec(tuple(tuple(g) for g in groups), tuple(ids))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
