"""The base of every config section: unknown keys are errors, values never change."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Unknown keys are errors (typos must not be ignored); a loaded config never changes.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
