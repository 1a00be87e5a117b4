"""The synthetic task data: deterministic, schema-valid, train / held-out disjoint (texts, entities)."""

from __future__ import annotations

import jsonschema

from train import synthdata


def test_deterministic_and_pure_by_index():
    a = synthdata.dataset("train", 50, seed=3)
    b = synthdata.dataset("train", 50, seed=3)
    assert a == b
    # any example is a pure function of (split, index, family, seed): resuming mid-stream gives the same data
    assert synthdata.dataset("train", 10, seed=3, start=40) == a[40:]
    assert synthdata.dataset("train", 50, seed=4) != a
    assert {e.family for e in a} == set(synthdata.FAMILIES)


def test_targets_follow_schema_and_are_in_text():
    validators = {f: jsonschema.Draft202012Validator(s) for f, s in synthdata.SCHEMAS.items()}
    for ex in synthdata.dataset("heldout", 200):
        validators[ex.family].validate(ex.target)
        assert list(ex.target) == list(synthdata.SCHEMAS[ex.family]["properties"])  # answer key order
        if ex.family == "extraction":
            for key in ("name", "city", "product", "order_id"):
                assert str(ex.target[key]) in ex.prompt, (key, ex.prompt)


def test_entity_pools_disjoint():
    train, held = synthdata.entity_pools("train"), synthdata.entity_pools("heldout")
    train_all = set().union(*train.values())
    held_all = set().union(*held.values())
    assert not train_all & held_all
    assert all(len(v) > 100 for v in held.values())


def test_train_and_heldout_disjoint():
    train = synthdata.dataset("train", 3000)
    held = synthdata.dataset("heldout", 600)
    assert not {e.prompt for e in train} & {e.prompt for e in held}
    # no held-out entity value (name, city, product) ever occurs in a training text
    train_text = "\n".join(e.prompt for e in train)
    for e in held:
        if e.family == "extraction":
            for key in ("name", "city", "product"):
                assert e.target[key] not in train_text, (key, e.target[key])


def test_worker_batches_equal_inline_batches():
    # A GPU run builds batches in spawned worker processes; they must be exactly the inline (CPU) batches,
    # in step order, starting at the resume step.
    import itertools

    import torch

    from model import load_tokenizer
    from train.data import batches
    from train.loop import ASSET_DIR

    tok = load_tokenizer(str(ASSET_DIR))
    args = (("labeling", "extraction"), 4, 0, 7, 32, tok, str(ASSET_DIR))
    inline = list(itertools.islice(batches(*args, workers=0), 3))
    stream = batches(*args, workers=2)
    pooled = list(itertools.islice(stream, 3))
    stream.close()
    for a, b in zip(inline, pooled):
        for name, t in vars(a).items():
            assert torch.equal(t, getattr(b, name)), name


def test_train_config_rejects_bad_device_and_init(tmp_path):
    import pytest

    from train.loop import TrainConfig

    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(init_from=str(tmp_path))
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=0)


def test_training_entities_are_fresh_and_never_heldout():
    # Training names are made per example (not drawn from a finite list the model could memorise), and
    # every one hashes to the training side, so the held-out pool stays unseen.
    train = synthdata.dataset("train", 2000, family="extraction")
    names = [e.target["name"] for e in train]
    assert len(set(names)) > 0.98 * len(names)
    held_pool = set().union(*synthdata.entity_pools("heldout").values())
    for e in train:
        first, last = e.target["name"].split(" ")
        brand = e.target["product"].split(" ")[0]
        for value in (first, last, brand, e.target["city"]):
            assert not synthdata._is_heldout(value) and value not in held_pool, value
