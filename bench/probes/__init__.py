"""One-off probes that explain a measurement (run by hand; their output goes into notes)."""
