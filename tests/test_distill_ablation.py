"""The ablation's metrics (Fréchet distance, sharpness) and its three loss variants, on real inputs and micro models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from fastdiff.distill import make_shapes, train
from fastdiff.distill.ablation import (
    RECIPE_STEPS,
    VARIANTS,
    frechet_distance,
    real_images,
    sharpness,
    sharpness_split,
    student_configs,
)
from fastdiff.distill.evaluation import eval_specs, held_out_specs
from fastdiff.distill.recipe import step_counts, training_trajectories
from fastdiff.distill.shapes import sample_specs
from fastdiff.testing import tiny_pipeline

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def real():
    return real_images(eval_specs(16))


def test_held_out_prompts_are_new_combinations_never_in_the_recipes_training_captions():
    specs = held_out_specs()
    assert len(specs) == len(set(specs)) == 96 and specs == held_out_specs()
    assert not set(specs) & set(sample_specs(4096, seed=0))  # the recipe's data: make_shapes(4096, seed=0)
    assert specs != held_out_specs(seed=31)


def _reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID's textbook formula, with scipy's general matrix square root."""
    mu, ca, cb = a.mean(0) - b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(mu @ mu + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(200, 8, generator=g) @ torch.randn(8, 8, generator=g)).double()  # correlated features
    assert abs(frechet_distance(a, a)) < 1e-8
    shift = torch.zeros(8, dtype=torch.float64)
    shift[0] = 3.0
    assert frechet_distance(a, a + shift) == pytest.approx(9.0, rel=1e-9)  # same covariance: ‖Δμ‖² only
    assert frechet_distance(a, a + 2 * shift) > frechet_distance(a, a + shift)
    assert frechet_distance(a, 2 * a) > 1.0  # a covariance change alone counts too


def test_frechet_distance_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 6, generator=g), torch.randn(250, 6, generator=g) * 1.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(_reference_frechet(a.numpy(), b.numpy()), rel=1e-6)


def test_frechet_distance_of_fewer_samples_than_dimensions_is_finite_and_zero_on_itself():
    a = torch.randn(48, 256, generator=torch.Generator().manual_seed(2)).double()  # the ablation's case: rank < D
    assert abs(frechet_distance(a, a)) < 1e-4  # √ of the ~200 round-off eigenvalues; the traces are ≈ 256 each
    assert frechet_distance(a, a + 1.0) == pytest.approx(256.0, rel=1e-6)


def test_real_images_are_as_sharp_as_themselves_and_a_blurred_copy_is_less(real):
    assert sharpness(real, real) == pytest.approx(1.0)
    assert sharpness_split(real, real) == pytest.approx((1.0, 0.0))  # all of a drawn image's energy is at edges
    blurred = F.avg_pool2d(F.pad(real, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert blurred.shape == real.shape
    assert sharpness(blurred, real) < 0.6
    flat = torch.zeros_like(real)
    assert sharpness(flat, real) == 0.0


def test_speckle_counts_as_sharpness_off_the_edges(real):
    noisy = real + 0.2 * torch.randn(real.shape, generator=torch.Generator().manual_seed(3))
    on_edges, off_edges = sharpness_split(noisy, real)
    assert off_edges > 0.5 and on_edges > 0.9
    assert sharpness(noisy, real) == pytest.approx(on_edges + off_edges)


def test_the_three_students_share_the_recipe_config_and_differ_only_in_the_loss_weights():
    assert RECIPE_STEPS == 7200  # the shipped run: --minutes 40
    assert step_counts(40.0) == {"vae": 2571, "teacher": 10800, "tiny_vae": 8000, "student": 7200}
    configs = student_configs(steps=7200)
    assert set(configs) == set(VARIANTS) == {"add", "distill", "adversarial"}
    add = configs["add"]
    assert (add.max_steps, add.batch_size, add.learning_rate, add.ema_decay) == (7200, 16, 1e-4, 0.99)
    assert (add.warmup_steps, add.teacher_guidance_scale, add.seed) == (20, 2.0, 0)
    assert add.student_prediction == "sample" and add.student_timesteps == (999, 999, 999, 749, 499, 249)
    assert add.distill_target == "teacher"  # the paper's score distillation, from the paths' points
    assert add.teacher_target_steps == 4  # towards the teacher's 4-step DDIM sample, not its one-step x̂0
    weights = {n: (c.distill_weight, c.adversarial_weight) for n, c in configs.items()}
    assert weights == {"add": (2.5, 3.0), "distill": (2.5, 0.0), "adversarial": (0.0, 3.0)}
    for config in configs.values():
        assert dataclasses.replace(config, distill_weight=2.5, adversarial_weight=3.0) == add


def test_the_loss_variants_really_switch_the_terms_in_a_micro_run(tmp_path):
    shapes = make_shapes(8, seed=0)
    images = torch.tensor(shapes.images).permute(0, 3, 1, 2).contiguous()
    students = {}
    for name, config in student_configs(steps=2).items():
        config = dataclasses.replace(config, batch_size=2, learning_rate=1e-3)
        pipe = tiny_pipeline("sd1")
        paths = training_trajectories(pipe, shapes.captions, config)
        result = train(pipe, images, shapes.captions, out_dir=tmp_path / name, config=config, trajectories=paths)
        d, a = config.distill_weight, config.adversarial_weight
        assert (d > 0, a > 0) == VARIANTS[name]
        for row in result.log:
            assert row["loss_distill"] > 0 and row["loss_adv_g"] != 0  # both terms are computed every time
            assert row["loss_g"] == pytest.approx(d * row["loss_distill"] + a * row["loss_adv_g"], rel=1e-5)
        students[name] = torch.cat([p.detach().flatten() for p in result.student.parameters()])
    # The same seed draws the same batches and noise: only the loss makes the students differ.
    assert not torch.equal(students["add"], students["distill"])
    assert not torch.equal(students["add"], students["adversarial"])
    assert not torch.equal(students["distill"], students["adversarial"])
