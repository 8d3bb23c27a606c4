"""Triton Python-backend model ``tagger``: per-tag scores + this version's vocabulary and thresholds → TAGS.

The exporter copies this file into each version folder as ``model.py``. Every repository variant uses it:

* CPU variant, Python backend (the embedded server): scores come from ONNX Runtime, in this process, on
  the version's own ``model.onnx``.
* CPU variant on Triton's ONNX Runtime backend, and the GPU variant: the config parameter ``scores_model``
  names the model that computes scores (``tagger_onnx``, ``tagger_trt``); they come from *the same version
  number* of that model through a BLS call, so a version of ``tagger`` always pairs its thresholds and
  vocabulary with the weights exported beside them, never with "the latest scores model".

Versions exported with an ``EMBEDDING`` graph output (the Python-backend CPU variant) also return, when a
request asks for it, each photo's pooled backbone features as float16 (half the bytes; the worker publishes
them as float16 anyway). Older versions and the BLS variants return SCORES and TAGS only.

The numeric code is in plain functions (``select_tags``, ``encode_tags``) that tests import without Triton.
Every file this model reads lives in its own version folder, so scores, vocabulary and thresholds always
change together.
"""

from __future__ import annotations

import json
import os

import numpy as np

INPUT = "IMAGE"
SCORES = "SCORES"
TAGS = "TAGS"
EMBEDDING = "EMBEDDING"


def select_tags(
    scores: np.ndarray, tags: list[str], thresholds: np.ndarray, ids: list[str] | None = None
) -> list[list[tuple]]:
    """Per image, the tags whose score clears that tag's calibrated threshold, by score descending:
    ``(tag, score)``, or ``(tag, score, id)`` when the vocabulary has stable tag ids."""
    out = []
    for row in scores:
        keep = np.flatnonzero(row >= thresholds)
        keep = keep[np.argsort(-row[keep], kind="stable")]
        out.append([(tags[k], round(float(row[k]), 4), *([ids[k]] if ids else [])) for k in keep])
    return out


def encode_tags(selected: list[list[tuple]]) -> np.ndarray:
    """The TAGS output: one JSON ``[[tag, score(, id)], ...]`` per image, shape [N, 1], dtype object (bytes)."""
    return np.array([[json.dumps(row, separators=(",", ":")).encode()] for row in selected], dtype=np.object_)


class OnnxScores:
    """Scores, and the embedding when the graph has one, from ONNX Runtime on the version's ``model.onnx``
    (CPU variant)."""

    def __init__(self, version_dir: str, intra_op_threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # No busy-waiting between calls: on a small CPU the spinning threads take cores from the worker's
        # decoders (measured: 1.6 → 0.7 ms of Triton CPU per image, same throughput).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        #: whether the graph has the EMBEDDING output (versions exported since it exists)
        self.has_embedding = any(o.name == EMBEDDING for o in self.session.get_outputs())

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([SCORES], {INPUT: images})[0]

    def with_embedding(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores [N, tags] and the float16 embedding [N, D], from one run of the graph."""
        scores, embedding = self.session.run([SCORES, EMBEDDING], {INPUT: images})
        return scores, embedding.astype(np.float16)


class ModelScores:
    """Scores from version ``version`` of the scores model ``model`` (ONNX Runtime backend or TensorRT
    plan) through BLS."""

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, int(version)
        # No call into the server from here: a BLS call made while the server is still loading its models
        # aborted the stub (boost::interprocess::lock_exception, seen in CI). Until this version's scores
        # model is loaded, a request fails with an error that names it, and the worker retries it (never a
        # dead letter).

    has_embedding = False

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import triton_python_backend_utils as pb

        request = pb.InferenceRequest(
            model_name=self.model,
            model_version=self.version,
            inputs=[pb.Tensor(INPUT, images)],
            requested_output_names=[SCORES],
            preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.model} v{self.version}: {response.error().message()}")
        return pb.get_output_tensor_by_name(response, SCORES).as_numpy()


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        with open(os.path.join(version_dir, "vocab.json")) as fh:
            vocab = json.load(fh)
        self.tags, self.ids = vocab["tags"], vocab.get("ids")
        with open(os.path.join(version_dir, "thresholds.json")) as fh:
            self.thresholds = np.asarray(json.load(fh)["thresholds"], dtype=np.float32)
        if params.get("scores_model"):
            self.scores = ModelScores(params["scores_model"], args["model_version"])
        else:
            self.scores = OnnxScores(version_dir, int(params.get("intra_op_threads", "0")))

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        arrays = [pb_utils.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        try:
            batch = np.concatenate(arrays)
            embedding = None
            if self.scores.has_embedding and any(EMBEDDING in r.requested_output_names() for r in requests):
                scores, embedding = self.scores.with_embedding(batch)
            else:
                scores = self.scores(batch)
        except Exception as exc:  # one bad request must not fail the others: retry each alone
            if len(requests) == 1:
                return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tagger: {exc}"))]
            return [self.execute([r])[0] for r in requests]
        responses, start = [], 0
        for array in arrays:
            part = scores[start : start + len(array)]
            tags = encode_tags(select_tags(part, self.tags, self.thresholds, self.ids))
            outputs = [pb_utils.Tensor(SCORES, part), pb_utils.Tensor(TAGS, tags)]
            if embedding is not None:  # Triton passes on only the outputs each request asked for
                outputs.append(pb_utils.Tensor(EMBEDDING, embedding[start : start + len(array)]))
            start += len(array)
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
