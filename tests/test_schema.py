"""The request schema and the validation pipeline: bounds, messages that name the field,
resolution against a deployment's limits and the model's defaults, one format table."""

from __future__ import annotations

import base64
import json
import pickle
from typing import get_args

import pytest
from pydantic import ValidationError

from inference import codec
from inference.errors import InferenceError, InvalidRequest, Overloaded, RequestTimeout
from inference.models.mock import MockModel
from inference.results import GenerateResult
from inference.schema import SEED_MAX, Defaults, GenerateRequest, Job, OutputFormat
from inference.settings import Settings
from inference.validation import Validator, capped, describe_errors, parse


def resolve(request: GenerateRequest | dict, **settings: object) -> Job:
    """The pipeline's job for ``request`` on the mock model (20 steps, weight 1, 256x256)."""
    return Validator(MockModel(), Settings(**settings)).job(request)


def messages(**fields: object) -> list[str]:
    with pytest.raises(ValidationError) as info:
        GenerateRequest(**fields)
    return [e["message"] for e in describe_errors(info.value.errors())]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"width": 1004}, "width must be a multiple of 8, got 1004 (try 1000 or 1008)"),
        ({"height": 70}, "height must be a multiple of 8, got 70 (try 64 or 72)"),
        ({"steps": 500}, "steps: Input should be less than or equal to 150, got 500"),
        ({"steps": 0}, "steps: Input should be greater than or equal to 1, got 0"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0, got -1"),
        ({"seed": SEED_MAX + 1}, f"less than or equal to {SEED_MAX}, got {SEED_MAX + 1}"),
        ({"prompt_weight": 31}, "prompt_weight: Input should be less than or equal to 30"),
        ({"num_outputs": 5}, "num_outputs: Input should be less than or equal to 4, got 5"),
        ({"output_format": "gif"}, "output_format: Input should be 'png', 'jpeg' or 'webp'"),
        ({"prompt": "x" * 2001}, "prompt: String should have at most 2000 characters"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_invalid_fields_name_the_field_and_bound(fields: dict, expected: str) -> None:
    assert any(expected in m for m in messages(**fields)), messages(**fields)


def test_defaults_and_bounds_accepted() -> None:
    request = GenerateRequest(seed=SEED_MAX, width=2048, height=64, num_outputs=4)
    assert request.prompt == "" and request.output_format == "png" and request.steps is None


def test_resolve_fills_model_defaults_and_draws_seeds() -> None:
    job = resolve(GenerateRequest(num_outputs=3))
    assert (job.steps, job.width, job.height, job.prompt_weight) == (20, 256, 256, 1.0)
    assert len(job.seeds) == 3 and 0 <= job.seeds[0] <= SEED_MAX
    assert job.seeds[1] == (job.seeds[0] + 1) % (SEED_MAX + 1)


def test_resolve_seed_wraps_at_the_top() -> None:
    job = resolve(GenerateRequest(seed=SEED_MAX, num_outputs=2))
    assert job.seeds == (SEED_MAX, 0)


def test_explicit_zero_prompt_weight_is_kept() -> None:
    assert resolve(GenerateRequest(prompt_weight=0.0)).prompt_weight == 0.0


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"steps": 60}, "steps", "steps must be <= 50 on this server (MAX_STEPS), got 60"),
        ({"width": 640}, "width", "width must be <= 512 on this server (MAX_WIDTH), got 640"),
        ({"width": 512, "height": 512}, "width", "MAX_PIXELS), got 512x512 = 262144"),
    ],
)
def test_resolve_enforces_deployment_limits(fields: dict, field: str, text: str) -> None:
    limits = {"max_steps": 50, "max_width": 512, "max_height": 512, "max_pixels": 200_000}
    with pytest.raises(InvalidRequest) as info:
        resolve(GenerateRequest(**fields), **limits)
    assert info.value.field == field and text in info.value.message


def test_num_outputs_is_bounded_by_max_batch_size() -> None:
    with pytest.raises(InvalidRequest, match=r"num_outputs must be <= 2 .*MAX_BATCH_SIZE.*got 3"):
        resolve({"num_outputs": 3}, max_batch_size=2)


def test_a_dict_gets_every_schema_problem_in_one_error() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse({"width": 1004, "steps": 0})
    fields = [e["field"] for e in info.value.errors]
    assert fields == ["steps", "width"] or fields == ["width", "steps"]
    assert "width must be a multiple of 8" in info.value.message and "steps:" in info.value.message
    with pytest.raises(InvalidRequest, match="must be a dict of GenerateRequest fields, got list"):
        parse([1, 2])


def test_dicts_and_models_give_the_same_job() -> None:
    fields = {"prompt": "fox", "seed": 3, "steps": 4, "width": 64, "height": 72}
    assert resolve(fields) == resolve(GenerateRequest(**fields))


def test_the_models_defaults_are_capped_to_the_limits_then_overridden() -> None:
    validator = Validator(MockModel(), Settings(max_width=128, max_steps=10, default_height=64))
    assert validator.defaults == Defaults(steps=10, prompt_weight=1.0, width=128, height=64)
    sdxl = Defaults(steps=50, prompt_weight=5.0, width=1024, height=1024)
    limits = Settings(max_width=1000, max_height=2048, max_pixels=2048**2).limits
    assert capped(sdxl, limits, multiple=16) == Defaults(50, 5.0, 992, 1024)


def test_one_format_table_names_every_output_format() -> None:
    assert tuple(codec.FORMATS) == get_args(OutputFormat)
    assert (
        codec.BY_SUFFIX[".jpg"].name == "jpeg" and codec.BY_MEDIA_TYPE["image/jpg"].name == "jpeg"
    )


def test_result_json_has_standard_base64_and_round_trips() -> None:
    payload = bytes(range(256))
    result = GenerateResult.model_validate(
        {
            "images": [
                {
                    "data": payload,
                    "seed": 1,
                    "width": 8,
                    "height": 8,
                    "format": "png",
                    "media_type": "image/png",
                }
            ],
            "seed": 1,
            "model": "mock",
            "batch_size": 1,
            "timings": {"queue_ms": 0, "inference_ms": 1, "encode_ms": 0, "total_ms": 1},
        }
    )
    text = result.model_dump_json()
    encoded = json.loads(text)["images"][0]["data"]
    # bytes 0-255 encode to both "+" and "/" in standard base64 ("-" and "_" in URL-safe)
    assert encoded == base64.b64encode(payload).decode("ascii")
    assert "+" in encoded and "/" in encoded
    assert GenerateResult.model_validate_json(text).images[0].data == payload


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequest("steps", "steps must be <= 50, got 60"),
        Overloaded("the queue is full", retry_after_s=3),
        RequestTimeout("too slow"),
    ],
)
def test_domain_errors_survive_pickling(error: InferenceError) -> None:
    """Modal and Cog carry errors across processes, so they must unpickle intact."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and copy.__dict__ == error.__dict__
    assert str(copy) == str(error)
