"""How a target's outputs are judged against TensorFlow's: tolerances and the other figures, per output."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# One tolerance for every output, or per output name with "" as the default (Polygraphy's convention). An
# output a dict does not cover, and every output under the empty default {}, gets the default of the precision
# the graph computes in (modelgate.precision).
Tolerance = float | dict[str, float]


def normalized_tolerance(value: Tolerance) -> Tolerance:
    values = [value] if isinstance(value, (int, float)) else list(value.values())
    if any(v < 0 for v in values):
        raise ValueError("tolerances must not be negative")
    return dict(value) if isinstance(value, dict) else float(value)


class Criteria(BaseModel):
    """How a target's outputs are judged against TensorFlow's. Exact-precision targets hold every element
    within atol or rtol; reduced-precision ones (float16, int8) are judged on figures that fit them. Each
    figure is one number or per output {"": default, "output_name": value}; None leaves it unjudged."""

    model_config = ConfigDict(extra="forbid")

    elementwise: bool = Field(default=True, description="Every element within atol or rtol.")
    atol: Tolerance = Field(default={}, description="Empty: by the graph's float precision (modelgate.precision).")
    rtol: Tolerance = Field(default={}, description="Empty: by the graph's float precision (modelgate.precision).")
    min_cosine_similarity: Tolerance | None = None
    min_top1_agreement: Tolerance | None = Field(default=None, description="Class-score outputs only.")
    max_p99_rel_diff: Tolerance | None = None

    @field_validator("atol", "rtol", "min_cosine_similarity", "min_top1_agreement", "max_p99_rel_diff")
    @classmethod
    def _valid_figure(cls, value: Tolerance | None) -> Tolerance | None:
        return None if value is None else normalized_tolerance(value)
