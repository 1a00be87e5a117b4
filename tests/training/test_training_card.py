"""The model card's training section: one run, or stages with their own family schedules."""

from __future__ import annotations

from train.evaluate import _schedule


def _state(stages=None):
    cfg = {"lr": 0.003, "warmup": 100, "batch_size": 16, "steps": 2300, "self_cond_frac": 0.4,
           "families": ["labeling", "extraction", "extraction"], "seed": 3}
    st = {"config": cfg, "step": 2300, "train_seconds": 600.0}
    if stages is not None:
        st["stages"] = stages
    return st


def test_single_run_states_its_schedule():
    text, cmd = _schedule(_state(), "labeling 33% of batches, extraction 67% of batches")
    assert "batch 16, 2300 steps = 36,800 examples" in text and "10 min" in text
    assert "--steps 2300 --batch-size 16 --lr 0.003" in cmd
    assert "1 CPU thread of a 2-core machine" in text and "--threads 1 " in cmd  # pre-option states: 1
    text, cmd = _schedule(dict(_state(), config=dict(_state()["config"], threads=2), where="a GPU"), "MIX")
    assert "10 min of training on a GPU" in text and "--threads 2 " in cmd
    # the command reproduces the run: its seed and family schedule are part of it
    assert "--seed 3 --threads 2 --families labeling,extraction,extraction`" in cmd
    text, cmd = _schedule(dict(_state(), config=dict(_state()["config"], device="cuda")), "MIX")
    assert "10 min of training on one cuda device" in text and "CPU thread" not in text
    assert "--device cuda " in cmd


def test_stages_with_their_own_family_mix_get_a_column():
    stages = [
        {"where": "CPU", "steps": 100, "batch": 16, "lr": 0.003, "minutes": 2.0, "command": "a --out r1",
         "families": ["labeling", "extraction", "extraction"]},
        {"where": "GPU", "steps": 50, "batch": 128, "lr": 0.0004, "minutes": 1.0, "command": "b --out r2",
         "families": ["labeling"] + ["extraction"] * 5},
    ]
    text, cmd = _schedule(_state(stages), "ignored: stages differ")
    assert "ignored" not in text and "family shares per stage below" in text
    assert "two-pass" not in text  # no stage names its self-conditioning share: no column
    assert "| 1 | CPU | 100 x 16 | 1,600 | 0.003 | 2.0 | 33% / 67% |" in text
    assert "| 2 | GPU | 50 x 128 | 6,400 | 0.0004 | 1.0 | 17% / 83% |" in text
    assert "8,000 examples in all" in text and cmd == "`a --out r1` then `b --out r2`"
    # stages without schedules keep the run-level sentence and no extra column
    text, _ = _schedule(_state([{k: v for k, v in s.items() if k != "families"} for s in stages]), "MIX")
    assert "(MIX)" in text and "labeling / extraction" not in text


def test_stages_with_their_own_self_conditioning_share_get_a_column():
    stages = [
        {"where": "CPU", "steps": 100, "batch": 16, "lr": 0.003, "minutes": 2.0, "command": "a --out r1",
         "families": ["labeling", "extraction"], "self_cond_frac": 0.4},
        {"where": "CPU", "steps": 50, "batch": 32, "lr": 0.0004, "minutes": 1.0, "command": "b --out r2",
         "families": ["extraction"], "self_cond_frac": 0.5},
    ]
    text, _ = _schedule(_state(stages), "ignored")
    assert "two-pass batches |" in text
    assert "| 1 | CPU | 100 x 16 | 1,600 | 0.003 | 2.0 | 50% / 50% | 40% |" in text
    assert "| 2 | CPU | 50 x 32 | 1,600 | 0.0004 | 1.0 | 0% / 100% | 50% |" in text


def test_card_renders_report_schedule_and_self_conditioning_share(tmp_path):
    import shutil
    from pathlib import Path

    from train.evaluate import write_card

    asset = Path(__file__).resolve().parents[2] / "model" / "assets" / "dgbatch-small"
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(asset / name, tmp_path / name)
    report = {"n_per_family": 7, "results": [
        {"family": "extraction", "constrained": True, "steps": 12, "exact": 0.5, "valid": 1.0,
         "tokens_per_forward": 4.0, "fields": {"name": 0.75}}]}
    state = dict(_state(), n_params=123, losses=[[1, 0.5], [2, 0.25]])
    text = write_card(report, state, tmp_path, "VERDICT SENTENCE")
    assert (tmp_path / "README.md").read_text() == text
    assert "self-conditioning on\n40% of the batches" in text and "VERDICT SENTENCE" in text
    assert "| extraction | on | 12 | 50.0% | 100.0% | 4.00 | name 75.0% |" in text
    assert "123-parameter" in text and "(mean of the last 30 batches) 0.375" in text
    stages = [{"where": "CPU", "steps": 10, "batch": 4, "lr": 0.001, "minutes": 1.0, "command": "x --out r9",
               "families": ["extraction"], "self_cond_frac": 0.5}]
    text = write_card(report, dict(state, stages=stages), tmp_path, "V")
    assert "self-conditioning on\nthe share of batches given per stage below" in text
    assert "| 1 | CPU | 10 x 4 | 40 | 0.001 | 1.0 | 0% / 100% | 50% |" in text
    assert "--out r9 --export" in text
