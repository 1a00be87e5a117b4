"""The errors of the JSON Schema -> regex translation (schema_regex.py and the modules it uses)."""

from __future__ import annotations


class UnsupportedSchema(ValueError):
    """The schema uses a keyword (or combination) we cannot generate exactly; the message names it."""


class Unsatisfiable(UnsupportedSchema):
    """No JSON value validates against this subschema (a false schema, disjoint types, an empty enum...).

    A refusal when the whole schema is affected; an optional property (or an anyOf/oneOf branch) whose
    schema raises it is simply never generated, which is exact: no valid instance could contain it.
    """
