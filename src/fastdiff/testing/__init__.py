"""Test helpers: tiny random-weight pipelines, a fake hub cache and original-format single files, all offline.

Nothing here downloads anything: the models are built in code with the real wiring of each family and a few
dozen channels, and laid out under the real repo ids and file names so code under test sees what it would see
after a real download.
"""

from .hub_cache import cached_repo_path, make_hf_cache, repo_seed
from .repo_configs import MODEL_INDEX_CLASSES, SCHEDULER_CONFIGS
from .single_file import original_state_dict, save_single_file
from .tiny import (
    save_tiny_pipeline,
    tiny_autoencoder_tiny,
    tiny_lora,
    tiny_pipeline,
    tiny_tokenizer,
    tiny_unet,
    tiny_unet_checkpoint,
)
from .tiny_flux import tiny_pipeline as tiny_flux_pipeline
from .tiny_flux import tiny_t5_tokenizer
from .tiny_flux2 import tiny_pipeline as tiny_flux2_pipeline
from .tiny_qwenimage import tiny_pipeline as tiny_qwenimage_pipeline
from .tiny_qwenimage import tiny_qwen2_tokenizer
from .tiny_sana_sprint import tiny_gemma_tokenizer
from .tiny_sana_sprint import tiny_pipeline as tiny_sana_sprint_pipeline
from .tiny_sd3 import tiny_pipeline as tiny_sd3_pipeline

__all__ = [
    "MODEL_INDEX_CLASSES",
    "SCHEDULER_CONFIGS",
    "cached_repo_path",
    "make_hf_cache",
    "original_state_dict",
    "repo_seed",
    "save_single_file",
    "save_tiny_pipeline",
    "tiny_autoencoder_tiny",
    "tiny_flux2_pipeline",
    "tiny_flux_pipeline",
    "tiny_gemma_tokenizer",
    "tiny_lora",
    "tiny_pipeline",
    "tiny_qwen2_tokenizer",
    "tiny_qwenimage_pipeline",
    "tiny_sana_sprint_pipeline",
    "tiny_sd3_pipeline",
    "tiny_t5_tokenizer",
    "tiny_tokenizer",
    "tiny_unet",
    "tiny_unet_checkpoint",
]
