"""Each served version's request latency and compute cost, from Triton's own metrics (``darkroom compare
--triton-metrics``; docs/rollout.md).

Tag events carry no inference time, and the worker's Triton histogram is not labelled by version; Triton
labels its per-model metrics by *version*, so one scrape gives both versions of a rollout side by side:

- request duration p50/p99 (µs): the ``nv_inference_request_summary_us`` quantiles, which Triton exports
  only when started with ``--metrics-config=summary_latencies=true`` (the embedded stack and the k8s
  deployment do). Triton's summaries cover a sliding window of recent requests, not the compare window.
- compute µs per image: cumulative ``nv_inference_compute_infer_duration_us`` over ``nv_inference_count``
  (images) since the version was loaded. Triton charges each request of a dynamically merged batch the
  whole batch's compute time, so where its batcher merges requests this is an upper bound.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

#: a metrics page bigger than this is not Triton's
MAX_METRICS_BYTES = 8 * 1024 * 1024
SCRAPE_TIMEOUT_S = 5.0


def scrape(url: str) -> str:
    """The text of a Prometheus metrics page at an ``http(s)://`` URL; ValueError naming the URL otherwise."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"--triton-metrics {url[:100]!r} is not an http(s) URL (e.g. http://127.0.0.1:8002/metrics)"
        )
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as resp:  # noqa: S310 - scheme checked
            body = resp.read(MAX_METRICS_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read Triton's metrics at {url[:100]}: {exc}") from None
    if len(body) > MAX_METRICS_BYTES:
        raise ValueError(f"{url[:100]} answered over {MAX_METRICS_BYTES} bytes: not a Triton metrics page")
    return body.decode("utf-8", "replace")


def version_costs(text: str, model: str, versions: list[str]) -> dict[str, dict[str, float | None]]:
    """Per version of ``model``: request duration p50/p99 (µs; None without summaries), compute µs per image
    (None before its first image), images and requests served, from a metrics page's text. ValueError if
    the text is not Prometheus' format."""
    wanted = {v: {"request_p50_us": None, "request_p99_us": None, "compute_us_per_image": None,
                  "images": 0.0, "requests": 0.0} for v in versions}  # fmt: skip
    compute: dict[str, float] = {}
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"not a Prometheus metrics page: {exc}") from None
    for sample in samples:
        version = sample.labels.get("version")
        if sample.labels.get("model") != model or version not in wanted:
            continue
        out, name = wanted[version], sample.name.removesuffix("_total")
        if name == "nv_inference_request_summary_us" and sample.labels.get("quantile") in ("0.5", "0.99"):
            key = "request_p50_us" if sample.labels["quantile"] == "0.5" else "request_p99_us"
            out[key] = sample.value if sample.value == sample.value else None  # NaN: no request in the window
        elif name == "nv_inference_count":
            out["images"] = sample.value
        elif name == "nv_inference_request_success":
            out["requests"] = sample.value
        elif name == "nv_inference_compute_infer_duration_us":
            compute[version] = sample.value
    for version, out in wanted.items():
        if out["images"] and version in compute:
            out["compute_us_per_image"] = compute[version] / out["images"]
    return wanted
