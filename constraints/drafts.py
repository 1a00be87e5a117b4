"""Which JSON Schema drafts we compile: draft 4 and later; a draft-3 schema is refused by name.

Every output is checked with the validator of the schema's own draft (jsonschema's `validator_for`,
constraints/schema_regex.py `strict_validator`), so the translation must follow that draft's meaning. Draft 3
differs from the later drafts in ways the translation does not model: `required: true` sits on the property
(a draft-4 reading ignores it and emits `{}`, which draft 3 rejects), `time` has no offset, `type` may hold
schemas, `disallow`, `extends` and `divisibleBy` exist. Refusing it is the sound choice; JSONSchemaBench
holds no draft-3 schema.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from constraints.schema_errors import UnsupportedSchema


def check_draft(schema: Any) -> None:
    """Raise UnsupportedSchema when the schema's `$schema` selects draft 3."""
    if isinstance(schema, dict) and jsonschema.validators.validator_for(schema) is jsonschema.Draft3Validator:
        raise UnsupportedSchema(
            f"$schema {schema.get('$schema')!r} (draft 3) is not supported: draft 3 marks required "
            "properties and some formats differently; use draft 4 or later"
        )
