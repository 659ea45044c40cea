"""The published configs of the repos fastdiff builds without a download, shipped as the repos' own JSON files.

`repo_config("stabilityai/sdxl-turbo", "unet/config.json")` reads `<owner>/<repo>/<file>` beside this module
(README.md there says which files are byte for byte the published ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["config_repos", "repo_config"]

_ROOT = Path(__file__).parent


def repo_config(repo_id: str, path: str) -> dict[str, Any]:
    """The JSON file `path` of the hub repo `repo_id` as it publishes it."""
    config: dict[str, Any] = json.loads((_ROOT / repo_id / path).read_text())
    return config


def config_repos() -> list[str]:
    """Every pipeline repo whose configs are shipped (those with a `model_index.json`)."""
    return sorted(path.parent.relative_to(_ROOT).as_posix() for path in _ROOT.glob("*/*/model_index.json"))
