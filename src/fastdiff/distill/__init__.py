"""Adversarial Diffusion Distillation (Sauer et al. 2023) of a diffusers UNet teacher into a 1-4 step student, and
the `shapes` toy data with `ShapesClassifier`, which reads their attributes back (the stand-in for a CLIP score).
"""

from .classifier import ShapesClassifier, accuracy, evaluate, images_to_tensor, shipped_classifier, train_classifier
from .config import ADDConfig
from .discriminator import LADDDiscriminator, TeacherFeatures
from .export import export_student, load_preset_file, sample_grid
from .losses import distillation_loss, hinge_d_loss, hinge_g_loss, predict_x0, r1_penalty
from .shapes import ShapesData, ShapeSpec, caption, draw, make_shapes, parse_caption
from .trainer import TrainResult, train

__all__ = [
    "ADDConfig",
    "LADDDiscriminator",
    "ShapeSpec",
    "ShapesClassifier",
    "ShapesData",
    "TeacherFeatures",
    "TrainResult",
    "accuracy",
    "caption",
    "distillation_loss",
    "draw",
    "evaluate",
    "export_student",
    "hinge_d_loss",
    "hinge_g_loss",
    "images_to_tensor",
    "load_preset_file",
    "make_shapes",
    "parse_caption",
    "predict_x0",
    "r1_penalty",
    "sample_grid",
    "shipped_classifier",
    "train",
    "train_classifier",
]
