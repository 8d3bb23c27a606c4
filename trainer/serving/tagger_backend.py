"""Triton Python-backend model ``tagger`` (CPU variant): ONNX Runtime + this version's vocabulary and thresholds.

The exporter copies this file into each version folder as ``model.py``. The numeric code is in plain
functions (``select_tags``, ``encode_tags``) that tests import without Triton. Every file this model reads
lives in its own version folder, so scores, vocabulary and thresholds always change together.
"""

from __future__ import annotations

import json
import os

import numpy as np

INPUT = "IMAGE"
SCORES = "SCORES"
TAGS = "TAGS"


def select_tags(scores: np.ndarray, tags: list[str], thresholds: np.ndarray) -> list[list[tuple[str, float]]]:
    """Per image, the tags whose score clears that tag's calibrated threshold, by score descending."""
    out = []
    for row in scores:
        keep = np.flatnonzero(row >= thresholds)
        keep = keep[np.argsort(-row[keep], kind="stable")]
        out.append([(tags[k], round(float(row[k]), 4)) for k in keep])
    return out


def encode_tags(selected: list[list[tuple[str, float]]]) -> np.ndarray:
    """The TAGS output: one JSON ``[[tag, score], ...]`` per image, shape [N, 1], dtype object (bytes)."""
    return np.array([[json.dumps(row, separators=(",", ":")).encode()] for row in selected], dtype=np.object_)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import onnxruntime as ort

        version_dir = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        with open(os.path.join(version_dir, "vocab.json")) as fh:
            self.tags = json.load(fh)["tags"]
        with open(os.path.join(version_dir, "thresholds.json")) as fh:
            self.thresholds = np.asarray(json.load(fh)["thresholds"], dtype=np.float32)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        arrays = [pb_utils.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        try:
            scores = self.session.run([SCORES], {INPUT: np.concatenate(arrays)})[0]
        except Exception as exc:  # one bad request must not fail the others: retry each alone
            if len(requests) == 1:
                return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tagger: {exc}"))]
            return [self.execute([r])[0] for r in requests]
        responses, start = [], 0
        for array in arrays:
            part = scores[start : start + len(array)]
            start += len(array)
            tags = encode_tags(select_tags(part, self.tags, self.thresholds))
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor(SCORES, part), pb_utils.Tensor(TAGS, tags)])
            )
        return responses
