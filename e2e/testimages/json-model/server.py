"""A user's own JSON model server, as teams write them: a plain FastAPI app, no OIP, no Rollwise.

POST /predict {"instances": [[sepal_l, sepal_w, petal_l, petal_w], ...]} answers
{"predictions": ["setosa", ...], "model_version": VERSION} from a fixed rule-based Iris model.
GET / is its readiness. The cluster tests run it behind the signals proxy (`runtime.server`,
protocol http-json); MODEL_BROKEN=1 makes every prediction fail with a 500 (a bad release) and
MODEL_CONSTANT=<class> makes it answer one class only (a drifted one).
"""

import os

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

VERSION = os.environ.get("MODEL_VERSION", "dev")
BROKEN = os.environ.get("MODEL_BROKEN") == "1"
CONSTANT = os.environ.get("MODEL_CONSTANT")

app = FastAPI()


class Instances(BaseModel):
    instances: list[list[float]]


def predict(row: list[float]) -> str:
    if CONSTANT:
        return CONSTANT
    petal_length, petal_width = row[2], row[3]
    if petal_length < 2.5:
        return "setosa"
    return "versicolor" if petal_width < 1.75 else "virginica"


@app.get("/")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/predict")
def predictions(body: Instances) -> dict[str, object]:
    if BROKEN:
        raise HTTPException(status_code=500, detail="model failed")
    if any(len(row) != 4 for row in body.instances):
        raise HTTPException(status_code=400, detail="each instance has 4 features")
    return {"predictions": [predict(row) for row in body.instances], "model_version": VERSION}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "9000")), log_level="warning")
