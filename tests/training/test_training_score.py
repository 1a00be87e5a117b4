"""train.evaluate.score: exact / valid / per-field accuracy and the per-field misses list."""
import json

from train import synthdata
from train.evaluate import score


def test_score_counts_fields_and_lists_each_miss():
    exs = synthdata.dataset("heldout", 3, "extraction")
    right = exs[0].answer
    wrong_id = dict(exs[1].target, order_id=exs[1].target["order_id"] + 1, city="Nowhere")
    texts = [right, json.dumps(wrong_id), "not json"]
    r = score(exs, texts)
    assert r["n"] == 3
    assert r["exact"] == 1 / 3
    assert r["valid"] == 2 / 3  # a wrong value that fits the schema is still valid
    assert r["fields"]["order_id"] == 1 / 3 and r["fields"]["name"] == 2 / 3
    by_row = {}
    for m in r["misses"]:
        by_row.setdefault(m["row"], {})[m["field"]] = (m["target"], m["got"])
    assert 0 not in by_row
    assert by_row[1] == {"order_id": (exs[1].target["order_id"], wrong_id["order_id"]),
                         "city": (exs[1].target["city"], "Nowhere")}
    # An unparseable reply misses every field, with nothing got.
    assert by_row[2] == {f: (exs[2].target[f], None) for f in exs[2].target}
