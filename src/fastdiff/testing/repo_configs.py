"""The scheduler and pipeline classes of the hub repos the presets name, read from the configs fastdiff ships
(`fastdiff.configs`), so tests need no download."""

from __future__ import annotations

from typing import Any

from ..configs import config_repos, repo_config

__all__ = ["MODEL_INDEX_CLASSES", "SCHEDULER_CONFIGS"]

# scheduler/scheduler_config.json of each repo, key for key.
SCHEDULER_CONFIGS: dict[str, dict[str, Any]] = {
    repo: repo_config(repo, "scheduler/scheduler_config.json") for repo in config_repos()
}

# model_index.json "_class_name" of each pipeline repo.
MODEL_INDEX_CLASSES: dict[str, str] = {
    repo: repo_config(repo, "model_index.json")["_class_name"] for repo in config_repos()
}
