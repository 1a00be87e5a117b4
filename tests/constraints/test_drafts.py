"""A draft-3 schema is refused by name: its `required: true` and `time` mean something else than in the
drafts we translate, and outputs are checked with the schema's own draft."""

from __future__ import annotations

import pytest

from constraints.drafts import check_draft
from constraints.schema_errors import UnsupportedSchema
from constraints.schema_regex import schema_to_regex

DRAFT3 = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object",
          "properties": {"v": {"type": "string", "required": True}}}


def test_draft3_is_refused_naming_the_draft():
    with pytest.raises(UnsupportedSchema, match="draft 3"):
        check_draft(DRAFT3)
    with pytest.raises(UnsupportedSchema, match="draft 3"):
        schema_to_regex(DRAFT3)


@pytest.mark.parametrize("uri", [None, "http://json-schema.org/draft-04/schema#",
                                 "http://json-schema.org/draft-07/schema#",
                                 "https://json-schema.org/draft/2020-12/schema"])
def test_later_drafts_pass(uri):
    schema = {"type": "object", "properties": {"v": {"type": "string"}}}
    if uri:
        schema["$schema"] = uri
    check_draft(schema)
