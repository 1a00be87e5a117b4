"""A pydantic model importable as "tests.constraints.pyd_models:Person" for the pydantic section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=6)
    age: int = Field(ge=0, le=120)
    role: Literal["admin", "user"]
    email: str | None = None
