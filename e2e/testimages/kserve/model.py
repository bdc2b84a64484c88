"""Iris behind KServe's ModelServer, as KServe documents custom Python predictors."""

import argparse

import joblib
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server

parser = argparse.ArgumentParser(parents=[model_server.parser])
parser.add_argument("--model_path", required=True)
parser.add_argument("--model_format", default="sklearn")
args, _ = parser.parse_known_args()


class Iris(Model):
    def __init__(self, name: str, path: str, fmt: str) -> None:
        super().__init__(name)
        self.path, self.fmt = path, fmt
        self.load()

    def load(self) -> bool:
        if self.fmt == "onnx":
            import onnxruntime as ort  # noqa: PLC0415 - only the ONNX variant needs it

            self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
        elif self.fmt == "xgboost":
            import xgboost as xgb  # noqa: PLC0415 - only the bench's tree rows need it

            self.xgb = xgb.Booster(model_file=self.path)
            self.xgb.set_param({"nthread": 1})
        elif self.fmt == "lightgbm":
            import lightgbm as lgb  # noqa: PLC0415 - only the bench's tree rows need it

            self.lgb = lgb.Booster(model_file=self.path)
        else:
            self.model = joblib.load(self.path)
        self.ready: bool = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        if self.fmt == "onnx":
            label = self.session.run(None, {self.input_name: x.astype(np.float32)})[0]
        elif self.fmt == "xgboost":
            label = self.xgb.inplace_predict(x.astype(np.float32)).argmax(axis=1)
        elif self.fmt == "lightgbm":
            label = np.asarray(self.lgb.predict(x.astype(np.float64), num_threads=1)).argmax(axis=1)
        else:
            label = self.model.predict(x)
        data = [str(v) for v in label]
        out = InferOutput(name="label", shape=list(label.shape), datatype="BYTES", data=data)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "")


if __name__ == "__main__":
    ModelServer().start([Iris(args.model_name, args.model_path, args.model_format)])
