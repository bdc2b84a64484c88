"""Fallback rule for Iris: petal length alone (about 95 % accurate), never fails."""

import numpy as np


class Model:
    inputs = [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
    classes = ["setosa", "versicolor", "virginica"]

    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        petal = x[:, 2]
        label = np.where(petal < 2.5, "setosa", np.where(petal < 4.9, "versicolor", "virginica"))
        return {"label": label.astype(object)}
