"""Tools on top of the runtime: the `darkroom` command, the embedded stack, the demo and the benchmark."""
