"""Benchmark harness: few-step presets against the SD 1.5 baseline and plain diffusers, on one device.

`scenarios` parses the rows, `sources` loads their models (`random_weights` builds the real `architectures` with
random weights, so nothing is downloaded), `runner` times them (`timing`, `flops`), `report` writes the table,
JSON, Markdown and plot, and `cli` is `fastdiff bench`. See docs/benchmarks.md.

Nothing is imported here: `fastdiff bench` answers an unreachable hub before torch loads.
"""
