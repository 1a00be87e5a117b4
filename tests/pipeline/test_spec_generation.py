"""The job spec's `generation` section against the engine's parameter list (engine/params.py
SAMPLER_BOUNDS): the spec takes the engine's names, and a value the engine would refuse is refused when the
spec loads, naming the field."""

from __future__ import annotations

import pytest
import yaml

from engine.params import SAMPLER_BOUNDS, GenerationParams
from model import DiffusionGemmaConfig
from pipeline.spec import JobSpec, SpecError

# the shipped defaults the engine fills in where the spec leaves a parameter unset
DEFAULTS = DiffusionGemmaConfig.full_size().generation


def _write(tmp_path, generation: dict):
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump({"input": {"path": "x", "prompt_column": "p"}, "output": "o",
                                 "generation": generation}))
    return p


def test_spec_takes_the_engines_parameters_by_name(tmp_path):
    every = {name: getattr(DEFAULTS, name) for name in SAMPLER_BOUNDS}
    assert JobSpec.load(_write(tmp_path, {**every, "seed": 3})).generation.engine_overrides() == every
    with pytest.raises(SpecError, match=r"generation\.beam_width: unknown field \(.*sampler parameters: "
                                        + ", ".join(SAMPLER_BOUNDS)):
        JobSpec.load(_write(tmp_path, {"beam_width": 4}))
    # a null parameter means the default, as leaving it out does
    assert JobSpec.load(_write(tmp_path, {"t_max": None})) == JobSpec.load(_write(tmp_path, {}))


@pytest.mark.parametrize(
    ("generation", "field", "engine_field"),
    [
        ({"t_max": 0}, "t_max", "t_max"),
        ({"t_max": -1.0}, "t_max", "t_max"),
        ({"t_min": -0.1}, "t_min", "t_min"),
        ({"t_max": 0.3, "t_min": 0.4}, "t_min", "t_max/t_min"),
        ({"t_max": 0.4, "t_min": 0.4}, "t_min", "t_max/t_min"),
        ({"entropy_bound": 0}, "entropy_bound", "entropy_bound"),
        ({"entropy_bound": -0.5}, "entropy_bound", "entropy_bound"),
        ({"entropy_bound": float("inf")}, "entropy_bound", "entropy_bound"),
        ({"confidence_threshold": 0}, "confidence_threshold", "confidence_threshold"),
        ({"stability_threshold": -1}, "stability_threshold", "stability_threshold"),
        ({"max_new_tokens": 0}, "max_new_tokens", "max_new_tokens"),
        ({"max_denoising_steps": 0}, "max_denoising_steps", "max_denoising_steps"),
    ],
)
def test_values_the_engine_refuses_are_refused_at_spec_load(tmp_path, generation, field, engine_field):
    with pytest.raises(ValueError, match=f"GenerationParams.{engine_field}:"):
        GenerationParams.from_defaults(DEFAULTS, **generation)
    with pytest.raises(SpecError, match=rf"(?s)job\.yaml: invalid job spec:.*generation\.{field}: .*expect"):
        JobSpec.load(_write(tmp_path, generation))


@pytest.mark.parametrize(
    "generation",
    [{"t_min": 0}, {"t_max": 1e-9, "t_min": 0}, {"stability_threshold": 0}, {"entropy_bound": 1e-9},
     {"confidence_threshold": 1e-9}, {"max_new_tokens": 1, "max_denoising_steps": 1}],
)
def test_edge_values_the_engine_takes_load(tmp_path, generation):
    spec = JobSpec.load(_write(tmp_path, generation))
    assert spec.generation.engine_overrides() == generation
    params = GenerationParams.from_defaults(DEFAULTS, **spec.generation.engine_overrides())
    assert all(getattr(params, k) == v for k, v in generation.items())


def test_fingerprint_keeps_the_first_versions_form(tmp_path):
    """A job planned by the first version (all seven sampler fields, null when unset, and seed) resumes:
    its generation fingerprint is unchanged; a later knob enters it only when set."""
    old = {"confidence_threshold": None, "entropy_bound": None, "max_denoising_steps": 16,
           "max_new_tokens": 32, "seed": 0, "stability_threshold": None, "t_max": None, "t_min": None}
    first = {"max_denoising_steps": 16, "max_new_tokens": 32, "seed": 0}
    assert JobSpec.load(_write(tmp_path, first)).generation.fingerprint_dict() == old
    assert JobSpec.load(_write(tmp_path, {**first, "n": 2})).generation.fingerprint_dict() == {**old, "n": 2}
