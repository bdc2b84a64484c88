"""A bad release as MLServer users ship one: the runtime loads, reports ready, and fails every
prediction (MLServer answers 500), e.g. a preprocessing step that no longer matches the model."""

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse


class BrokenModel(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise RuntimeError("the model failed: feature pipeline and model disagree")
