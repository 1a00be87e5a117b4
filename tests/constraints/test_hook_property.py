"""Property: random schemas from a generated family and random logits give 100% valid outputs,
single-canvas and multi-canvas, including the tightest budget (max_new_tokens == minimum length)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from constraints import build_hook, decode_text, validate_output
from tests.constraints.conftest import rollout

KEYS = ["id", "name", "tags", "x", "é"]

leaf = st.one_of(
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-50, 50),
        st.integers(0, 300),
    ),
    st.builds(
        lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
        st.integers(0, 2),
        st.integers(0, 5),
    ),
    st.lists(st.sampled_from(["x", "yy", 'q"t', 1, True, None]), min_size=1, max_size=3, unique=True).map(
        lambda v: {"enum": v}
    ),
    st.sampled_from(
        [{"type": "boolean"}, {"type": "number"}, {"type": "null"}, {"type": "string", "format": "date"}]
    ),
)


def _obj(props: dict, data) -> dict:
    req = [k for k in props if data.draw(st.booleans())]
    return {"type": "object", "properties": props, "required": req}


def schemas(data):
    kids = st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(
                lambda it, lo, extra: {"type": "array", "items": it, "minItems": lo, "maxItems": lo + extra},
                inner,
                st.integers(0, 2),
                st.integers(0, 2),
            ),
            st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=3).map(
                lambda d: {"type": "object", "properties": d, "required": sorted(d)[:1]}
            ),
        ),
        max_leaves=5,
    )
    return _obj(data.draw(st.dictionaries(st.sampled_from(KEYS), kids, min_size=1, max_size=4)), data)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    slack=st.sampled_from([0, 2, 40]),
    canvas=st.sampled_from([4, 7, 256]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_schemas_always_validate(gemma_tok, tmp_path_factory, data, slack, canvas, seed):
    from constraints import CompileConfig, ConstraintCache

    cfg = CompileConfig(cache_dir=tmp_path_factory.getbasetemp() / "prop-cache", in_process=True)
    schema = schemas(data)
    section = {"json_schema": schema}
    kw = dict(canvas_length=canvas, config=cfg, pad_token_id=0, cache=ConstraintCache())  # <pad> is 0
    probe = build_hook(section, gemma_tok, [1], max_new_tokens=10**6, **kw)
    budget = probe.min_tokens + slack
    hook = build_hook(section, gemma_tok, [1], max_new_tokens=budget, **kw)
    tokens, state = rollout(hook, gemma_tok.get_vocab_size(), max_new_tokens=budget, canvas=canvas, seed=seed)
    assert state.done
    ids = tokens[: tokens.index(1)] if 1 in tokens else tokens
    assert 0 not in ids  # no pad inside the constrained text
    text = decode_text(hook, ids)
    assert gemma_tok.decode(ids) == text
    ok, parsed, err = validate_output(section, text)
    assert ok, (schema, text, err)
