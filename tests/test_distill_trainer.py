"""The ADD trainer on micro models: losses move, the teacher stays frozen, R1 is on inputs, resume is exact."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fastdiff.distill import ADDConfig, LADDDiscriminator, TeacherFeatures, make_shapes, r1_penalty, train
from fastdiff.distill.conditioning import NoiseSchedule, encode_captions
from fastdiff.distill.discriminator import default_layers, feature_channels
from fastdiff.distill.losses import hinge_d_loss, hinge_g_loss
from fastdiff.errors import FastDiffError
from fastdiff.testing import tiny_pipeline, tiny_unet

LOSSES = ("loss_g", "loss_distill", "loss_adv_g", "loss_d", "loss_d_hinge", "r1")


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def data():
    shapes = make_shapes(16, seed=0)
    images = torch.tensor(shapes.images).permute(0, 3, 1, 2).contiguous()  # (N, 3, 64, 64) uint8
    return images, shapes.captions


def _config(**changes):
    base = {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-4, "disc_learning_rate": 1e-3, "seed": 0}
    return ADDConfig(**(base | changes))


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_every_loss_is_finite_and_moves_and_the_teacher_stays_frozen(tmp_path, data):
    pipe = tiny_pipeline("sd1")
    prompts = tuple(data[1][:2])
    result = train(pipe, *data, out_dir=tmp_path, config=_config(sample_every=2, sample_prompts=prompts))
    rows = result.log
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and result.step == 4
    for name in LOSSES:
        values = [r[name] for r in rows]
        assert all(math.isfinite(v) for v in values), (name, values)
        assert len(set(values)) > 1, (name, values)
    assert json.loads((tmp_path / "losses.json").read_text()) == rows
    assert (tmp_path / "losses.csv").read_text().count("\n") == 5
    reference = tiny_unet("sd1", seed=0).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in pipe.unet.state_dict().items())
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    assert any(not torch.equal(v, reference[k]) for k, v in result.student.state_dict().items())
    grid = (tmp_path / "samples" / "step-0000004.png").stat().st_size
    assert grid > 0


def _micro_discriminator():
    torch.manual_seed(0)
    pipe = tiny_pipeline("sd1")
    teacher = pipe.unet.requires_grad_(False)
    layers = default_layers(teacher)
    cond = encode_captions(pipe, ["a red circle on a blue background"] * 2, height=64, width=64)
    heads = LADDDiscriminator(feature_channels(teacher, layers), text_dim=cond.pooled.shape[1], hidden=16)
    return teacher, TeacherFeatures(teacher, layers), heads, cond


def test_heads_get_gradients_through_frozen_teacher_features():
    teacher, features, heads, cond = _micro_discriminator()
    before = _state(teacher)
    t = torch.tensor([500, 100])
    fake = torch.randn(2, 4, 8, 8, requires_grad=True)  # stands for the student's output
    feats = features(fake, t, **cond.unet_kwargs())
    assert [f.shape[1] for f in feats] == [16, 32, 64, 64]  # three down blocks and the mid block
    hinge_g_loss(heads(feats, cond.pooled, t)).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0  # the student is reached through the teacher
    assert all(p.grad is None for p in teacher.parameters())
    heads.zero_grad()
    with torch.no_grad():
        real = features(torch.randn(2, 4, 8, 8), t, **cond.unet_kwargs())
        fake_feats = features(fake.detach(), t, **cond.unet_kwargs())
    assert not any(f.requires_grad for f in real)
    hinge_d_loss(heads(real, cond.pooled, t), heads(fake_feats, cond.pooled, t)).backward()
    assert all(p.grad is not None for p in heads.parameters())
    # (an output bias may get exactly 0: as many real as fake patches inside the hinge's margin cancel out)
    assert all(p.grad.abs().sum() > 0 for p in heads.parameters() if p.dim() > 1)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_r1_is_a_gradient_wrt_the_real_inputs_and_trains_the_heads():
    teacher, features, heads, cond = _micro_discriminator()
    t = torch.tensor([300, 600])
    with torch.no_grad():
        real = features(torch.randn(2, 4, 8, 8), t, **cond.unet_kwargs())
    real = [f.requires_grad_() for f in real]
    scores = heads(real, cond.pooled, t)
    penalty = r1_penalty(scores, real)
    grads = torch.autograd.grad(sum(s.sum() for s in scores), real, retain_graph=True)
    expected = sum(g.pow(2).flatten(1).sum(1) for g in grads).mean()
    assert penalty > 0 and torch.allclose(penalty, expected)
    penalty.backward()  # the graph was kept: R1 reaches the heads' parameters
    assert all(p.grad is not None for p in heads.parameters() if p.dim() > 1)
    assert all(p.grad is None for p in teacher.parameters())


def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path, data):
    whole = train(tiny_pipeline("sd1"), *data, out_dir=tmp_path / "whole", config=_config(max_steps=4))
    first = train(tiny_pipeline("sd1"), *data, out_dir=tmp_path / "cut", config=_config(max_steps=2))
    assert first.step == 2
    resumed = train(tiny_pipeline("sd1"), *data, out_dir=tmp_path / "cut", config=_config(max_steps=4), resume=True)
    assert resumed.step == 4 and [r["step"] for r in resumed.log] == [1, 2, 3, 4]
    for key in LOSSES:
        assert [r[key] for r in resumed.log] == [r[key] for r in whole.log]
    expected, got = _state(whole.student), _state(resumed.student)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    for name in ("student", "heads"):
        a = (tmp_path / "whole" / "checkpoints" / "step-0000004" / f"{name}.safetensors").read_bytes()
        b = (tmp_path / "cut" / "checkpoints" / "step-0000004" / f"{name}.safetensors").read_bytes()
        assert a == b


def test_time_budget_guided_teacher_and_ablation_weights(tmp_path, data):
    config = _config(max_steps=50, max_seconds=0.0, teacher_guidance_scale=3.0, distill_weight=0.0)
    result = train(tiny_pipeline("sd1"), *data, out_dir=tmp_path, config=config)
    assert result.step == 1  # the budget is checked after each step
    assert result.log[0]["loss_g"] == pytest.approx(result.log[0]["loss_adv_g"])


def test_sdxl_teacher_trains_one_step(tmp_path, data):
    result = train(tiny_pipeline("sdxl"), *data, out_dir=tmp_path, config=_config(max_steps=1))
    assert all(math.isfinite(result.log[0][k]) for k in LOSSES)


def test_bf16_mixed_precision_runs_the_frozen_teacher_in_bf16(tmp_path, data):
    pipe = tiny_pipeline("sd1")
    result = train(pipe, *data, out_dir=tmp_path, config=_config(max_steps=1, mixed_precision="bf16"))
    assert pipe.unet.dtype == torch.bfloat16 and result.student.dtype == torch.float32
    assert all(math.isfinite(result.log[0][k]) for k in LOSSES)


def test_noise_schedule_matches_diffusers():
    from diffusers import DDPMScheduler

    pipe = tiny_pipeline("sd1")
    ours = NoiseSchedule(pipe.scheduler.config)
    theirs = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.allclose(ours.alphas_cumprod, theirs.alphas_cumprod, atol=1e-6)
    x0, eps, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([999, 10])
    noisy = ours.noise(x0, eps, t, zero_terminal=True)
    assert torch.equal(noisy[0], ours.alpha_sigma(t)[1][0] * eps[0])  # t = 999: σ·ε alone (zero SNR)
    assert torch.allclose(noisy[1], theirs.add_noise(x0, eps, t)[1], atol=1e-5)


def test_a_several_step_teacher_target_is_diffusers_ddim_from_the_renoised_output():
    from diffusers import DDIMScheduler

    from fastdiff.distill.trainer import _Run, _teacher_target, _teacher_x0

    pipe = tiny_pipeline("sd1")
    run = _Run(*(None,) * 3, pipe.unet, None, NoiseSchedule(pipe.scheduler.config), None, [], [], torch.Generator())
    cond = encode_captions(pipe, ["a red circle", "a blue square"], height=64, width=64)
    x_s, s = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([800, 800])
    seen: list[list[int]] = []
    pipe.unet.register_forward_pre_hook(lambda _, args: seen.append(args[1].tolist()))
    with torch.no_grad():
        ours = _teacher_target(run, x_s, s, cond, 1.0, 4)
        assert seen == [[800, 800], [600, 600], [400, 400], [200, 200]]  # s·(k − j)/k
        one_step = _teacher_target(run, x_s, s, cond, 1.0, 1)
        assert torch.equal(one_step, _teacher_x0(run, x_s, s, cond, 1.0))  # one step is ADD's target
        ddim = DDIMScheduler.from_config(pipe.scheduler.config, steps_offset=0, timestep_spacing="leading")
        ddim.set_timesteps(5)
        assert ddim.timesteps.tolist() == [800, 600, 400, 200, 0]
        x = x_s
        for t in ddim.timesteps[:4]:
            out = ddim.step(pipe.unet(x, t, **cond.unet_kwargs()).sample, t, x)
            x, theirs = out.prev_sample, out.pred_original_sample
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert not torch.allclose(ours, one_step, atol=1e-3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"student_timesteps": (1000,)}, "student_timesteps"),
        ({"disc_timestep_range": (800, 100)}, "disc_timestep_range"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"distill_target": "real"}, "distill_target"),
        ({"teacher_target_steps": 0}, "teacher_target_steps"),
        ({"student_prediction": "x0"}, "student_prediction must be None or 'sample'"),
    ],
)
def test_bad_configs_raise(changes, message):
    with pytest.raises(FastDiffError, match=message):
        _config(**changes)


def test_captions_must_match_images(tmp_path, data):
    with pytest.raises(ValueError, match="16 images but 3 captions"):
        train(tiny_pipeline("sd1"), data[0], data[1][:3], out_dir=tmp_path)


def test_the_exported_student_loads_as_a_preset_and_generates(tmp_path, data, monkeypatch):
    from fastdiff import FewStepGenerator, presets
    from fastdiff.distill import export_student, load_preset_file

    monkeypatch.setattr(presets, "_REGISTRY", dict(presets._REGISTRY))  # other tests see the built-in table

    pipe = tiny_pipeline("sd1")
    result = train(pipe, *data, out_dir=tmp_path / "run", config=_config(max_steps=1))
    path = export_student(pipe, result.student, tmp_path / "run", name="micro-add-test", height=64, width=64)
    (tmp_path / "run").rename(tmp_path / "moved")  # the preset file names its folder relative to itself
    preset = load_preset_file(tmp_path / "moved" / path.name, overwrite=True)
    assert presets.get("micro-add-test") == preset and preset.steps == (1, 2, 3, 4)
    assert preset.guidance_scale == 0.0 and preset.scheduler == "euler-trailing" and preset.family == "sd1"
    generator = FewStepGenerator.from_preset("micro-add-test", device="cpu", dtype="float32")
    out = generator("a red circle on a blue background", seed=0, steps=1)
    assert out.images[0].size == (64, 64)
    student = generator.pipeline.unet.state_dict()
    assert all(torch.equal(v, student[k]) for k, v in result.student.state_dict().items())


def test_an_x0_student_trains_on_its_own_output_and_exports_an_x0_sampler(tmp_path, data, monkeypatch):
    from fastdiff import FewStepGenerator, presets
    from fastdiff.distill import export_student, load_preset_file

    monkeypatch.setattr(presets, "_REGISTRY", dict(presets._REGISTRY))
    pipe = tiny_pipeline("sd1")
    config = _config(max_steps=2, student_prediction="sample", adversarial_weight=0.0)
    result = train(pipe, *data, out_dir=tmp_path / "x0", config=config)
    eps = train(pipe, *data, out_dir=tmp_path / "eps", config=_config(max_steps=2, adversarial_weight=0.0))
    first = [row["loss_distill"] for row in (result.log[0], eps.log[0])]
    assert first[0] != pytest.approx(first[1])  # the same first batch, read as x̂0 instead of ε
    path = export_student(
        pipe, result.student, tmp_path / "x0", name="micro-x0", height=64, width=64, prediction_type="sample"
    )
    assert json.loads(path.read_text())["scheduler"] == "euler-trailing-x0"
    saved = json.loads((tmp_path / "x0" / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "EulerDiscreteScheduler" and saved["prediction_type"] == "sample"
    assert saved["timestep_spacing"] == "trailing"  # diffusers' own loading of the folder samples as the preset
    assert pipe.scheduler.config.prediction_type == "epsilon"  # the teacher's own scheduler is put back
    preset = load_preset_file(path, overwrite=True)
    generator = FewStepGenerator.from_preset(preset.name, device="cpu", dtype="float32")
    assert generator.pipeline.scheduler.config.prediction_type == "sample"
    assert generator("a red circle on a blue background", seed=0, steps=1).images[0].size == (64, 64)


def test_bad_preset_files_raise(tmp_path):
    from fastdiff.distill import load_preset_file

    with pytest.raises(FastDiffError, match="cannot read preset file"):
        load_preset_file(tmp_path / "missing.json")
    (tmp_path / "preset.json").write_text(json.dumps({"name": "x", "colour": "red"}))
    with pytest.raises(FastDiffError, match=r"unknown fields \['colour'\]"):
        load_preset_file(tmp_path)
    (tmp_path / "preset.json").write_text(json.dumps({"name": "x", "repo_id": "nowhere"}))
    with pytest.raises(FastDiffError, match="is not a diffusers folder"):
        load_preset_file(tmp_path)


@pytest.mark.parametrize("student_prediction", [None, "sample"])
def test_the_training_parameterisation_matches_a_1_step_trailing_euler_pipeline(student_prediction):
    from diffusers import EulerDiscreteScheduler

    from fastdiff.distill.export import one_step_latents

    teacher = tiny_pipeline("sd1")
    pipe = tiny_pipeline("sd1")  # the student's pipeline: its scheduler reads the UNet's output as trained
    kind = student_prediction or teacher.scheduler.config.prediction_type
    pipe.scheduler = EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, timestep_spacing="trailing", prediction_type=kind
    )
    prompts = ["a red circle on a blue background", "a small green square in the top left on a white background"]
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = one_step_latents(teacher, pipe.unet, prompts, noise, prediction_type=student_prediction)
    theirs = pipe(
        prompts, num_inference_steps=1, guidance_scale=0.0, latents=noise, output_type="latent", height=64, width=64
    ).images
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_teacher_trajectories_are_the_trailing_euler_pipeline_and_feed_the_trajectory_target(tmp_path, data):
    from diffusers import EulerDiscreteScheduler

    from fastdiff.distill.recipe import teacher_trajectories

    pipe = tiny_pipeline("sd1")
    prompts = list(data[1][:3])
    noise = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    paths = teacher_trajectories(pipe, prompts, noise[:3], steps=4, guidance=2.0, timesteps=(999, 499))
    assert paths.shape == (3, 3, 4, 8, 8)
    euler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    theirs = type(pipe)(**(pipe.components | {"scheduler": euler}))(
        prompts, num_inference_steps=4, guidance_scale=2.0, latents=noise[:3], output_type="latent", height=64, width=64
    ).images
    assert torch.allclose(paths[:, -1], theirs, atol=1e-4), (paths[:, -1] - theirs).abs().max()
    with pytest.raises(ValueError, match="not on the 4-step trailing grid"):
        teacher_trajectories(pipe, prompts, noise[:3], steps=4, guidance=2.0, timesteps=(900,))
    config = _config(max_steps=2, distill_target="trajectory", student_timesteps=(999, 499))
    with pytest.raises(FastDiffError, match="needs train"):
        train(pipe, *data, out_dir=tmp_path / "none", config=config)
    everything = teacher_trajectories(pipe, data[1], noise, steps=4, guidance=2.0, timesteps=(999, 499))
    result = train(pipe, *data, out_dir=tmp_path / "run", config=config, trajectories=everything)
    assert all(math.isfinite(r[k]) for r in result.log for k in LOSSES)
    # The paths give the student's inputs and targets; the discriminator's real data are still the images.
    flipped = train(pipe, data[0].flip(-1), data[1], out_dir=tmp_path / "flip", config=config, trajectories=everything)
    assert flipped.log[0]["loss_distill"] == result.log[0]["loss_distill"]  # same student, batch and path
    assert [r["d_real"] for r in flipped.log] != [r["d_real"] for r in result.log]


def test_the_tiny_autoencoder_learns_the_latents_both_ways_and_replaces_the_vae(tmp_path, data):
    from diffusers import AutoencoderTiny

    from fastdiff.distill.conditioning import decode_latents, encode_images
    from fastdiff.distill.recipe import tiny_autoencoder, train_tiny_autoencoder, with_vae

    pipe = tiny_pipeline("sd1")
    images = data[0].float() / 127.5 - 1.0
    latents = encode_images(pipe.vae, images)
    tiny = tiny_autoencoder(seed=0)
    before = (decode_latents(tiny, latents) - images).abs().mean(), (encode_images(tiny, images) - latents).abs().mean()
    train_tiny_autoencoder(tiny, images, latents, 60, seed=0, log=tmp_path / "losses.csv")
    after = (decode_latents(tiny, latents) - images).abs().mean(), (encode_images(tiny, images) - latents).abs().mean()
    assert after[0] < 0.7 * before[0] and after[1] < 0.7 * before[1], (before, after)
    assert (tmp_path / "losses.csv").read_text().count("\n") == 61
    swapped = with_vae(pipe, tiny)
    assert isinstance(swapped.vae, AutoencoderTiny) and swapped.unet is pipe.unet and swapped.vae_scale_factor == 8
    out = swapped(data[1][0], num_inference_steps=2, output_type="pt", height=64, width=64).images
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_real_latents_replace_the_encoded_images_as_the_discriminators_real_data(tmp_path, data):
    from fastdiff.distill.conditioning import encode_images

    config = _config(max_steps=3)
    pipe = tiny_pipeline("sd1")
    encoded = encode_images(pipe.vae, data[0].float() / 127.5 - 1.0)
    default = train(pipe, *data, out_dir=tmp_path / "default", config=config)
    given = train(tiny_pipeline("sd1"), *data, out_dir=tmp_path / "given", config=config, real_latents=encoded)
    for key in ("loss_g", "d_real"):  # equal up to the encoder's batch size (16 at once here, 2 per step there)
        assert [r[key] for r in given.log] == pytest.approx([r[key] for r in default.log], rel=1e-5)
    other = train(tiny_pipeline("sd1"), *data, out_dir=tmp_path / "other", config=config, real_latents=-encoded)
    assert other.log[0]["d_real"] != default.log[0]["d_real"]
    assert other.log[0]["loss_g"] != default.log[0]["loss_g"]  # without paths they are also the student's inputs
    with pytest.raises(ValueError, match="real latents"):
        train(tiny_pipeline("sd1"), *data, out_dir=tmp_path / "bad", config=config, real_latents=encoded[:3])


def test_refined_latents_are_redrawn_closer_by_the_decoder_and_stay_near_the_encoders(data):
    from fastdiff.distill.conditioning import decode_latents, encode_images
    from fastdiff.distill.recipe import refine_latents, tiny_autoencoder

    vae = tiny_autoencoder(seed=0)
    images = data[0].float() / 127.5 - 1.0
    encoded = encode_images(vae, images)
    refined = refine_latents(vae, data[0], steps=20, chunk=5)  # uint8 in, three chunks of 5, 5 and 6
    assert refined.shape == encoded.shape and not refined.requires_grad
    before = (decode_latents(vae, encoded) - images).abs().mean()
    after = (decode_latents(vae, refined) - images).abs().mean()
    assert after < 0.99 * before, (before, after)  # an untrained decoder: it cannot draw much from any latent
    assert torch.equal(refine_latents(vae, images, steps=0), encoded)  # the start: the encoder's latents
    loose = refine_latents(vae, images, steps=20, anchor=0.0)
    assert (refined - encoded).norm() < (loose - encoded).norm()  # the anchor holds them nearer


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predict_x0_inverts_each_parameterisation(prediction_type):
    from fastdiff.distill import predict_x0

    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    alpha, sigma = NoiseSchedule({"beta_schedule": "linear"}).alpha_sigma(torch.tensor([10, 500, 990]))
    a, s = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
    x_t = a * x0 + s * eps
    output = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[prediction_type]
    assert torch.allclose(predict_x0(output, x_t, alpha, sigma, prediction_type=prediction_type), x0, atol=1e-3)
