"""Benchmark harness (`fastdiff bench`, docs/benchmarks.md): `scenarios` parses the rows, `sources` loads them
(`random_weights` builds the real `architectures`), `runner` times them (`timing`, `flops`), `report` writes the
results. Nothing is imported here, so `fastdiff bench` answers an unreachable hub before torch loads."""
