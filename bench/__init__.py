"""griffin-bench: the benchmark harness (catalog, backends, timing, workloads, runner, records)."""
