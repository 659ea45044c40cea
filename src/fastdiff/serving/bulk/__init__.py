"""Bulk runs (`fastdiff batch`): `prompts` reads the prompt file, `manifest` owns the output folder, `worker` turns
jobs into PNG bytes (in process or a process pool), `ray_runner` on Ray, and `cli` ties them to the command line."""

from .manifest import RunDir, image_name, write_atomic
from .prompts import Job, make_jobs, prompts_sha256, read_prompt_file

__all__ = ["Job", "RunDir", "image_name", "make_jobs", "prompts_sha256", "read_prompt_file", "write_atomic"]
