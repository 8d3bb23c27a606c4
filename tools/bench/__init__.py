"""``darkroom bench``: the workload, CPU accounting, the offline ceiling, streaming, the naive baseline and
the report, one module each; ``tools.bench.cli`` runs them."""
