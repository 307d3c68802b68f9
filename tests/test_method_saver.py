"""SAVER: the VAE's loss terms, the residual, the mixing weight, and the method on CPU."""
from __future__ import annotations

import math

import pytest
import torch

from vreid.methods import DataInfo, build_method
from vreid.methods.saver import ResidualMixer, SaverConfig
from vreid.methods.vae import VaeMethodConfig
from vreid.models.backbones.config import BackboneConfig
from vreid.models.vae import ConvVAE, VaeConfig, kl_term, normalised_residual, reconstruction_term

pytestmark = pytest.mark.usefixtures("one_thread")

INFO = DataInfo(num_classes=4, height=32, width=32)
SMALL_VAE = VaeConfig(widths=[8, 16], latent_dim=8)


def saver_cfg(**kw) -> SaverConfig:
    return SaverConfig(backbone=BackboneConfig(name="resnet_tiny_ibn_a", pretrained=None), vae=SMALL_VAE, **kw)


def batch(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(n // 4)
    return {"images": torch.randn(n, 3, 32, 32, generator=g), "labels": labels, "vehicle_ids": labels,
            "camera_ids": torch.zeros(n, dtype=torch.long), "viewpoints": -torch.ones(n, dtype=torch.long),
            "indices": torch.arange(n)}


def test_reconstruction_and_kl_terms_equal_hand_computations():
    x = torch.tensor([[[[0.0, 1.0]]], [[[0.5, 0.5]]]])  # (2, 1, 1, 2)
    recon = torch.tensor([[[[0.5, 0.5]]], [[[0.5, 1.5]]]])
    # image 1: 0.25 + 0.25 = 0.5; image 2: 0 + 1 = 1; mean over the batch 0.75
    assert reconstruction_term(x, recon).item() == pytest.approx(0.75)
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # per dim -0.5 (1 + lv - mu^2 - e^lv): [0.5, -0.5 (1 + ln2 - 2)] and [0, 2]
    kl1 = 0.5 + -0.5 * (1 + math.log(2.0) - 2.0)
    kl2 = 0.0 + 2.0
    assert kl_term(mu, logvar).item() == pytest.approx((kl1 + kl2) / 2)
    assert kl_term(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_the_vae_method_losses_are_the_two_terms():
    method = build_method(VaeMethodConfig(vae=VaeConfig(widths=[8, 16], latent_dim=8, beta=2.0)), INFO)
    b = batch()
    out = method(b)
    losses = method.losses(out, b)
    assert losses["reconstruction"].item() == pytest.approx(reconstruction_term(out["target"], out["recon"]).item())
    assert losses["kl"].item() == pytest.approx(2.0 * kl_term(out["mu"], out["logvar"]).item())
    assert out["recon"].shape == b["images"].shape and 0 <= out["recon"].min() and out["recon"].max() <= 1
    sum(losses.values()).backward()


def test_the_residual_of_a_perfect_reconstruction_is_zero():
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(normalised_residual(x, x.clone()), torch.zeros_like(x))
    r = normalised_residual(x, torch.zeros_like(x))
    assert r.min() >= 0 and r.max() <= 1 and torch.allclose(r.flatten(2).amax(2), torch.ones(2, 3))


@pytest.mark.parametrize("start", [0.01, 0.5, 0.99])
def test_the_mixing_weight_stays_in_0_1(start):
    mixer = ResidualMixer(start, learn=True)
    assert mixer.weight().item() == pytest.approx(start, rel=1e-5)
    opt = torch.optim.SGD(mixer.parameters(), lr=100.0)
    for sign in (1.0, -1.0):
        for _ in range(5):
            opt.zero_grad()
            (sign * mixer.weight()).backward()
            opt.step()
            assert 0.0 <= mixer.weight().item() <= 1.0
    with pytest.raises(ValueError, match="residual_weight"):
        ResidualMixer(1.0, learn=True)


def test_with_residual_weight_0_saver_is_bot_exactly():
    from vreid.methods.bot import BotConfig

    b = batch()
    torch.manual_seed(0)
    saver = build_method(saver_cfg(residual_weight=0.0, learn_residual_weight=False), INFO).eval()
    torch.manual_seed(0)
    bot = build_method(BotConfig(backbone=BackboneConfig(name="resnet_tiny_ibn_a", pretrained=None)), INFO).eval()
    assert saver.vae is None
    bot.load_state_dict(saver.state_dict())
    assert torch.equal(saver.embed(b["images"]), bot.embed(b["images"]))


def test_forward_backward_on_cpu_trains_the_weight_not_the_vae():
    method = build_method(saver_cfg(), INFO)
    method.train()
    assert not method.vae.training  # frozen VAE keeps its BN statistics
    b = batch()
    out = method(b)
    losses = method.losses(out, b)
    assert set(losses) == {"ce", "triplet"}
    sum(losses.values()).backward()
    assert method.mixer.logit.grad is not None and method.mixer.logit.grad.abs() > 0
    assert all(p.grad is None for p in method.vae.parameters())
    assert method.embed(b["images"]).shape == (8, method.backbone.num_features)


def test_the_stages_are_declared_only_when_a_vae_must_be_trained():
    from vreid.config import load_experiment
    from vreid.config.catalog import PACKAGED_CONFIGS

    cfg = load_experiment(PACKAGED_CONFIGS / "saver" / "synthetic.yaml")
    assert [s.name for s in type(build_method(saver_cfg(), INFO)).training_stages(cfg)] == ["vae", "reid"]
    cfg.model.vae_weights = "runs/some-vae"
    assert type(build_method(saver_cfg(), INFO)).training_stages(cfg) == []
    ablation = load_experiment(PACKAGED_CONFIGS / "saver" / "synthetic-no-residual.yaml")
    assert ablation.model.residual_weight == 0 and type(build_method(saver_cfg(), INFO)).training_stages(ablation) == []


def test_a_vae_of_other_settings_is_refused(tmp_path):
    from vreid.engine.bundle import save_bundle

    other = build_method(VaeMethodConfig(vae=VaeConfig(widths=[8, 16], latent_dim=4)), INFO)
    save_bundle(tmp_path, other)
    with pytest.raises(ValueError, match="vae_weights"):
        build_method(saver_cfg(), INFO).load_vae(str(tmp_path))
    same = build_method(VaeMethodConfig(vae=SMALL_VAE), INFO)
    save_bundle(tmp_path, same)
    saver = build_method(saver_cfg(), INFO)
    saver.load_vae(str(tmp_path))
    assert torch.equal(saver.vae.to_mu.weight, same.vae.to_mu.weight)


def test_the_vae_needs_sides_divisible_by_its_strides():
    with pytest.raises(ValueError, match="divisible by 8"):
        ConvVAE(VaeConfig(widths=[4, 4, 4]), 36, 32)


# --- EVER (residual_use: excite) ------------------------------------------------------------------------------------

def test_ever_alpha_fades_from_one_to_zero():
    from vreid.methods.saver import excitation_alpha

    assert excitation_alpha(0, 10) == pytest.approx(1.0)
    assert excitation_alpha(5, 10) == pytest.approx(0.5)
    assert excitation_alpha(10, 10) == pytest.approx(0.0, abs=1e-12) and excitation_alpha(12, 10) == pytest.approx(0.0, abs=1e-12)


def test_ever_excites_the_chosen_stages_in_training_only():
    torch.manual_seed(0)
    method = build_method(saver_cfg(residual_use="excite"), INFO)
    plain = build_method(saver_cfg(residual_weight=0.0, learn_residual_weight=False), INFO)
    plain.load_state_dict({k: v for k, v in method.state_dict().items() if k in plain.state_dict()})
    b = batch()
    seen = []
    handle = method.backbone.layer3.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].clone()))
    plain_seen = []
    plain.backbone.layer3.register_forward_hook(lambda _m, inputs, _o: plain_seen.append(inputs[0].clone()))
    method.train(), plain.train()
    for m in (method, plain):   # identical BN batch statistics: both see the same batch in train mode
        m(b)
    assert not torch.allclose(seen[0], plain_seen[0])        # layer2's output (layer3's input) was excited
    method.excite_alpha = 0.0
    method(b), plain(b)
    assert torch.allclose(seen[1], plain_seen[1], atol=1e-6)  # alpha 0: the plain trunk
    handle.remove()
    plain.load_state_dict({k: v for k, v in method.state_dict().items() if k in plain.state_dict()})  # same BN stats
    method.eval(), plain.eval()
    method.excite_alpha = 1.0
    x = b["images"]
    assert torch.allclose(method.embed(x), plain.embed(x), atol=1e-6)   # test time: no excitation, no VAE use
    losses = method.losses(method.train()(b), b)
    sum(losses.values()).backward()
    assert method.backbone.conv1.weight.grad is not None and all(p.grad is None for p in method.vae.parameters())


def test_ever_schedule_hook_and_bad_stages():
    from types import SimpleNamespace

    from vreid.methods.saver import ExcitationSchedule

    method = build_method(saver_cfg(residual_use="excite"), INFO)
    hook = [h for h in method.hooks() if isinstance(h, ExcitationSchedule)][0]
    hook.before_epoch(SimpleNamespace(epoch=3, cfg=SimpleNamespace(schedule=SimpleNamespace(epochs=6))))
    assert method.excite_alpha == pytest.approx(0.5)
    with pytest.raises(ValueError, match="excite_stages"):
        saver_cfg(residual_use="excite", excite_stages=[0]).validate()
