"""Bulk runs: `fastdiff batch` makes every prompt of a file into DIR/NNNNNN.png with a manifest, resumably, in one
process, in a process pool or on Ray actors.

`prompts` reads the prompt file, `manifest` owns the output folder (run header, atomic writes, resume), `worker`
turns jobs into PNG bytes, `local` and `ray_runner` run workers, and `cli` (`add_batch_arguments`, `run_batch`,
`python -m fastdiff.serving.bulk.cli`) ties them to the command line.
"""

from .manifest import RunDir, image_name, write_atomic
from .prompts import Job, make_jobs, prompts_sha256, read_prompt_file

__all__ = ["Job", "RunDir", "image_name", "make_jobs", "prompts_sha256", "read_prompt_file", "write_atomic"]
