"""`hrcn`: the documented widths and node counts, the graph-relation maths, the part priors, training on CPU, the
ablation switches, and official checkpoints (rebuilt below from the structure of the official HRCNHead) loading
with zero missing or unexpected keys and giving the official embedding."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vreid.config import ConfigError, load_experiment
from vreid.convert import CONVERTERS
from vreid.convert.base import fit_to_model
from vreid.convert.run import convert_checkpoint
from vreid.engine.bundle import load_bundle
from vreid.engine.freeze import FreezeModules
from vreid.methods import DataInfo, build_method
from vreid.models.backbones.registry import create_backbone
from vreid.models.hrcn import (
    CenterPool, GraphRelation, degenerate_parts, disc_masks, gated_affinity, normalized_adjacency, ring_masks,
    square_masks,
)

from conftest import build_from_config, random_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def build(config: str, *overrides: str, num_classes: int = 6, device: str = "cpu"):
    return build_from_config("hrcn", config, *overrides, num_classes=num_classes, device=device)


batch = random_batch


# --- widths and node counts ---------------------------------------------------------------------------------------

def test_full_size_model_has_the_documented_nodes_and_a_3584_d_feature():
    method, _ = build("veri776", num_classes=576, device="meta")
    assert method.num_features == 3584
    assert [s.num_nodes for s in method.cross.stages] == [3, 4, 4]  # layer3/layer4 stages add the summary node
    assert [s.width for s in method.cross.stages] == [256, 512, 1024]
    assert [s.lower.linear.in_features for s in method.cross.stages[1:]] == [768, 2048]
    assert method.regional.num_nodes == 6 and method.regional.width == 1024
    assert isinstance(method.regional.align_high, nn.Identity)
    graphs = [m for m in method.modules() if isinstance(m, GraphRelation)]
    assert [g.num_nodes for g in graphs] == [3, 4, 4, 6]
    assert all(g.layers[0].linear.weight.shape == (g.width, g.width) for g in graphs)
    assert [layer.linear.out_features for layer in method.feature_layers] == [512, 256, 256, 512,
                                                                               256, 256, 256, 256, 512, 512]
    assert [layer.linear.in_features for layer in method.feature_layers] == [1024] * 10
    assert method.classifier.weight.shape == (576, 3584) and method.neck.bn.num_features == 3584


@pytest.mark.parametrize("config, width, nodes", [("synthetic", 704, 7), ("synthetic-no-cross", 256, 3),
                                                  ("synthetic-no-regional", 320, 3)])
def test_synthetic_and_ablation_widths(config, width, nodes):
    method, _ = build(config, device="meta")
    assert method.num_features == width and len(method.feature_layers) == nodes
    assert (method.cross is None) == (config == "synthetic-no-cross")
    assert (method.regional is None) == (config == "synthetic-no-regional")
    if config == "synthetic-no-cross":
        assert method.regional.num_nodes == 3 and method.regional.align_high is None


def test_a_trunk_with_fewer_blocks_uses_all_of_them_and_the_last_widths():
    method, _ = build("veri776", "model.backbone.name=resnet18_ibn_a", "data.height=64", "data.width=64",
                      "model.regional_parts=2", "model.regional_feature_widths=[256,256,512,512]", device="meta")
    assert method.cross.num_blocks == (2, 2, 2)
    assert [s.num_nodes for s in method.cross.stages] == [2, 3, 3]
    assert [layer.linear.out_features for layer in method.feature_layers][:3] == [512, 256, 512]


@pytest.mark.parametrize("override, key", [
    ("model.cross_level=false model.regional=false", "model.regional"),
    ("model.cross_feature_widths=[512,256]", "model.cross_feature_widths"),
    ("model.regional_feature_widths=[256,256]", "model.regional_feature_widths"),
    ("model.nodes_per_stage=[3,3]", "model.nodes_per_stage"),
    ("model.stage_widths=[0,512,1024]", "model.stage_widths"),
    ("model.part_shape=hexagon", "model.part_shape"),
    ("model.freeze_backbone_epochs=-1", "model.freeze_backbone_epochs"),
    ("model.graph_dropout=1.0", "model.graph_dropout"),
    ("model.gate=-0.1", "model.gate"),
])
def test_bad_settings_are_config_errors_that_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_experiment("configs/hrcn/veri776.yaml", override.split())


def test_a_trunk_without_block_outputs_is_refused_at_build():
    cfg = load_experiment("configs/hrcn/synthetic.yaml")
    cfg.model.backbone.name = "timm:resnet18"
    with pytest.raises(ValueError, match=r"model\.backbone\.name"), torch.device("meta"):
        build_method(cfg.model, DataInfo(num_classes=4, height=64, width=64))


# --- graph relation ---------------------------------------------------------------------------------------------

def test_the_affinity_gate_zeroes_entries_at_or_below_it_and_rows_are_l1_normalised():
    nodes = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])  # c = 2: X X^T / 2
    raw = nodes @ nodes.transpose(1, 2) / 2  # [[.5, 0, .25], [0, .5, .25], [.25, .25, .25]]
    gated = gated_affinity(nodes, gate=0.2)
    assert torch.all(gated[raw <= 0.2] == 0) and torch.all(gated[raw > 0.2] > 0)
    assert torch.allclose(gated.sum(-1), torch.ones(1, 3))
    assert torch.allclose(gated[0, 0], torch.tensor([2 / 3, 0.0, 1 / 3]))  # the diagonal is kept
    assert torch.allclose(gated[0, 2], torch.full((3,), 1 / 3))
    at_gate = gated_affinity(nodes, gate=0.25)  # entries equal to the gate go too; an all-gated row stays zero
    assert torch.allclose(at_gate[0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0]]))


def test_the_normalised_adjacency_is_symmetric_for_a_symmetric_affinity_and_rows_sum_to_one_in_the_module():
    torch.manual_seed(0)
    sym = torch.rand(2, 5, 5)
    sym = sym + sym.transpose(1, 2)
    adj = normalized_adjacency(sym)
    assert torch.allclose(adj, adj.transpose(1, 2))
    with_loops = sym + torch.eye(5)
    d = with_loops.sum(-1).rsqrt()
    assert torch.allclose(adj, torch.diag_embed(d) @ with_loops @ torch.diag_embed(d))
    # the module's graph: E is row-stochastic, so D = 2 and A = (E + I) / 2 has rows summing to 1
    nodes = torch.rand(3, 6, 8)
    graph = GraphRelation(8, 6)
    a = graph.adjacency(nodes)
    assert torch.allclose(a.sum(-1), torch.ones(3, 6), atol=1e-6)
    assert torch.allclose(a, (gated_affinity(nodes, 1e-3) + torch.eye(6)) / 2)
    # a node whose every affinity is gated away keeps only its self-loop
    a = graph.adjacency(torch.cat([nodes[:, :5], torch.zeros(3, 1, 8)], dim=1))
    assert torch.allclose(a[:, 5], F.one_hot(torch.tensor(5), 6).float().expand(3, 6))


def test_graph_convolutions_are_initialised_as_documented():
    graph = GraphRelation(64, 4)
    for layer in graph.layers:
        assert torch.all(layer.linear.bias == 0) and abs(layer.linear.weight.std().item() - 0.01) < 2e-3
        assert layer.node_norm.num_features == 4 and layer.dropout.p == 0.5


# --- part priors ------------------------------------------------------------------------------------------------

def test_discs_on_the_official_16x16_map_and_dilution():
    masks = disc_masks(16, 16, 4)
    assert [int(m.sum()) for m in masks] == [12, 52, 112, 208]
    assert degenerate_parts(masks) == []
    x = torch.ones(1, 2, 16, 16)
    parts = CenterPool(4)(x)
    assert len(parts) == 5 and torch.equal(parts[-1], x)
    assert parts[0].mean().item() == pytest.approx(12 / 256)  # averaging runs over the whole map


def test_small_maps_name_their_degenerate_parts():
    assert degenerate_parts(disc_masks(4, 4, 4)) == [1, 3]  # empty first disc, third equals second
    assert [int(m.sum()) for m in disc_masks(4, 4, 2)] == [4, 12] and degenerate_parts(disc_masks(4, 4, 2)) == []


def test_rings_and_squares():
    discs, rings = disc_masks(16, 16, 4), ring_masks(16, 16, 4)
    assert torch.equal(sum(rings), discs[-1]) and torch.equal(rings[0], discs[0])
    assert [int(m.sum()) for m in square_masks(16, 16, 4)] == [16, 64, 144, 256]


# --- training ---------------------------------------------------------------------------------------------------

def test_forward_backward_and_embedding_on_cpu():
    method, _ = build("synthetic")
    method.train()
    b = batch()
    outputs = method(b)
    assert outputs["feat"].shape == (6, 704) and outputs["logits"].shape == (6, 6)
    losses = method.losses(outputs, b)
    assert set(losses) == {"ce", "triplet"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert method.cross.stages[0].nodes[0].conv.weight.grad.abs().sum() > 0
    assert method.regional.graph.layers[1].linear.weight.grad.abs().sum() > 0
    assert method.backbone.layer2[0].conv1.weight.grad.abs().sum() > 0
    method.eval()
    emb = method.embed(b["images"])
    feat, _ = method.features(b["images"])
    assert torch.allclose(emb, F.normalize(feat, dim=1)) and torch.allclose(emb.norm(dim=1), torch.ones(6))


def test_the_trunk_is_frozen_with_bn_in_eval_mode_for_the_configured_epochs():
    method, cfg = build("veri776", device="meta")
    (hook,) = method.hooks()
    assert isinstance(hook, FreezeModules) and hook.epochs == 20 and hook.freeze_bn_stats
    assert hook.modules == [method.backbone] and method.find_unused_parameters
    assert cfg.schedule.warmup_epochs == 20 and cfg.schedule.delay_epochs == 40 and cfg.schedule.epochs == 80
    assert build("synthetic", "model.freeze_backbone_epochs=0", device="meta")[0].hooks() == []


# --- official checkpoints ---------------------------------------------------------------------------------------
# The official Baseline + HRCNHead (fastreid/modeling/heads/hrcn_head.py, layers/pooling.py CenterPool), rebuilt
# from its structure: module names, shapes and forward as there (BN on 1x1 maps, 1x1 convs, x @ W + b graphs).

class OfficialHead(nn.Module):
    def __init__(self, gcn: int, in_channels: tuple[int, int, int], num_classes: int, nodes=(3, 3, 3),
                 block_nums=(4, 6, 3), parts: int = 4, final=(512, 256, 512, 256, 512),
                 final_num=(1, 2, 1, 4, 2), gate: float = 1e-3) -> None:
        super().__init__()
        self.nodes, self.block_nums, self.parts, self.gate = nodes, block_nums, parts, gate
        widths = [gcn // 2 ** (2 - i) for i in range(3)]

        def unit(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU(True))

        self.align_multilevel_layers = nn.ModuleList(
            nn.ModuleList(unit(in_channels[i], widths[i]) for _ in range(n)) for i, n in enumerate(nodes))
        self.multilevel_bns = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(widths[i]) for _ in range(n)) for i, n in enumerate(nodes))
        self.align_lower_layers = nn.ModuleList(
            unit(gcn // 2 ** (2 - i) * (i + n), gcn // 2 ** (1 - i)) for i, n in enumerate(nodes[:-1]))
        self.align_part_layers = nn.ModuleList(unit(in_channels[-1], gcn) for _ in range(parts + 1))
        self.part_bns = nn.ModuleList(nn.BatchNorm2d(gcn) for _ in range(parts + 1))
        self.align_high_layer = nn.Identity()
        dims = widths + [gcn]
        for name in ("gcn_weight_1", "gcn_weight_2"):
            setattr(self, name, nn.ParameterList(nn.Parameter(torch.randn(d, d) * 0.01) for d in dims))
        for name in ("gcn_bias_1", "gcn_bias_2"):
            setattr(self, name, nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in dims))
        counts = [nodes[0]] + [n + 1 for n in nodes[1:]] + [parts + 2]
        self.gcn_bn_1 = nn.ModuleList(nn.BatchNorm1d(c) for c in counts)
        self.gcn_bn_2 = nn.ModuleList(nn.BatchNorm1d(c) for c in counts)
        channels = [c for c, k in zip(final, final_num) for _ in range(k)]
        self.feat_layers = nn.ModuleList(unit(gcn, c) for c in channels)
        self.last_bn = nn.BatchNorm1d(sum(channels))
        self.global_classifier = nn.Linear(sum(channels), num_classes, bias=False)

    def edges(self, feats):
        b, n, m = feats.shape
        e = feats.bmm(feats.permute(0, 2, 1)) / m
        e = F.normalize(torch.where(e > self.gate, e, torch.zeros(b, n, n)), p=1, dim=-1)
        e = e + torch.eye(n)
        d = torch.diag_embed(e.sum(-1).pow(-0.5))
        return d.matmul(e).matmul(d)

    def gcn(self, x, edges, k):
        x1 = F.relu(self.gcn_bn_1[k](edges.matmul(x).matmul(self.gcn_weight_1[k]) + self.gcn_bias_1[k])) + x
        return F.relu(self.gcn_bn_2[k](edges.matmul(x1).matmul(self.gcn_weight_2[k]) + self.gcn_bias_2[k])) + x1

    @staticmethod
    def pool(x):
        return F.adaptive_avg_pool2d(x, 1)

    def circles(self, x):
        h, w = x.shape[-2:]
        min_r, cy, cx = min(h, w) / 2 / self.parts, (h - 1) / 2, (w - 1) / 2
        ih = torch.arange(0, h).expand(w, h).permute(1, 0)
        iw = torch.arange(0, w).expand(h, w)
        masks = [torch.where((ih - cy).pow(2) + (iw - cx).pow(2) <= pow(r * min_r, 2), torch.ones(h, w),
                             torch.zeros(h, w)) for r in range(1, self.parts + 1)]
        return [x * m for m in masks] + [x]

    def forward(self, blocks, final):
        groups, total = [], 0
        for n_nodes, n_blocks in zip(self.nodes, self.block_nums):
            begin = n_blocks - n_nodes + total
            total += n_blocks
            groups.append(blocks[begin:total])
        pieces, lower = [], None
        for idx, maps in enumerate(groups):
            feats = []
            if idx > 0:
                feats.append(F.relu(self.align_lower_layers[idx - 1](lower))[..., 0, 0])
            for i, m in enumerate(maps):
                feats.append(F.relu(self.multilevel_bns[idx][i](self.pool(self.align_multilevel_layers[idx][i](m))))
                             [..., 0, 0])
            x = torch.stack(feats, 1)
            out = self.gcn(x, self.edges(x), idx)
            if idx < len(groups) - 1:
                lower = torch.cat(list(out.unbind(1)), 1)[..., None, None]
            else:
                high = out[:, -1]
                pieces += [self.feat_layers[i](out[:, i, :, None, None])[..., 0, 0] for i in range(out.shape[1])]
        feats = [F.relu(self.part_bns[i](self.pool(self.align_part_layers[i](m))))[..., 0, 0]
                 for i, m in enumerate(self.circles(final))]
        x = torch.stack(feats + [self.align_high_layer(high)], 1)
        out = self.gcn(x, self.edges(x), 3)
        start = len(pieces)
        pieces += [self.feat_layers[start + i](out[:, i, :, None, None])[..., 0, 0] for i in range(out.shape[1])]
        return torch.cat(pieces, -1)  # last_feat: NECK_FEAT before


def official_blocks(trunk, x):
    """The official backbone's feature list: every block output of layer2, layer3, layer4, in order."""
    x = trunk.layer1(trunk.stem(x))
    outs = []
    for stage in (trunk.layer2, trunk.layer3, trunk.layer4):
        for block in stage:
            x = block(x)
            outs.append(x)
    return outs, x


def randomised(module: nn.Module, seed: int = 3) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * (0.02 if t.ndim == 2 else 0.2))
    return module.eval()


#: a narrow R50-IBN-a layout (3/4/6/3 bottlenecks, 1/8 of the widths) and the head widths scaled with it
SMALL = ("model.backbone.options={widths: [8, 16, 32, 64]}", "model.stage_widths=[16,32,64]",
         "model.regional_width=64", "model.cross_feature_widths=[32,16,16,32]",
         "model.regional_feature_widths=[16,16,16,16,32,32]", "data.height=128", "data.width=128")
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def official_checkpoint(num_classes: int = 5):
    torch.manual_seed(0)
    trunk = randomised(create_backbone("resnet50_ibn_a", widths=(8, 16, 32, 64)), seed=4)
    head = randomised(OfficialHead(64, (64, 128, 256), num_classes, final=(32, 16, 32, 16, 32)))
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"heads.{k}": v for k, v in head.state_dict().items()})
    state["pixel_mean"] = torch.tensor(MEAN).view(1, 3, 1, 1)
    state["pixel_std"] = torch.tensor(STD).view(1, 3, 1, 1)
    return state, trunk, head


def test_the_full_size_official_layout_loads_with_zero_missing_or_unexpected_keys():
    with torch.device("meta"):
        head = OfficialHead(1024, (512, 1024, 2048), 576)
        trunk = create_backbone("resnet50_ibn_a")
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"heads.{k}": v for k, v in head.state_dict().items()})
    method, cfg = build("veri776", num_classes=576, device="meta")
    converted = CONVERTERS.get("hrcn").convert(state, cfg.model)
    target = method.state_dict()
    assert set(converted.state_dict) == set(target)
    assert all(converted.state_dict[k].shape == v.shape for k, v in target.items())
    assert converted.num_classes == 576
    fit_to_model(converted, method, "fix")  # raises on any missing / unexpected / mismatched tensor


def test_a_converted_official_checkpoint_gives_the_official_embedding():
    state, trunk, head = official_checkpoint()
    method, cfg = build("veri776", *SMALL, num_classes=5)
    converted = CONVERTERS.get("hrcn").convert(state, cfg.model)
    weights, _ = fit_to_model(converted, method, "fix")
    assert set(converted.state_dict) == set(method.state_dict())
    method.load_state_dict(weights, strict=True)
    method.eval()
    x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = head(*official_blocks(trunk, x))
        feat, _ = method.features(x)
    assert feat.shape == expected.shape == (3, 224)
    assert torch.allclose(feat, expected, rtol=0, atol=1e-5), (feat - expected).abs().max()
    assert torch.allclose(method.embed(x), F.normalize(expected, dim=1), rtol=0, atol=1e-5)
    pre = CONVERTERS.get("hrcn").preprocessing(state)
    assert pre.mean == pytest.approx(tuple(m / 255 for m in MEAN)) and pre.std == pytest.approx(
        tuple(s / 255 for s in STD))


def test_vreid_convert_writes_a_run_that_embeds_like_the_official_model(tmp_path):
    state, trunk, head = official_checkpoint()
    path = tmp_path / "hrcn_veri.pth"
    torch.save({"model": state, "iteration": 0}, path)
    cfg = load_experiment("configs/hrcn/veri776.yaml", list(SMALL))
    report = convert_checkpoint("hrcn", path, cfg, tmp_path / "run")
    method = load_bundle(tmp_path / "run")
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = F.normalize(head(*official_blocks(trunk, x)), dim=1)
    assert torch.allclose(method.embed(x), expected, rtol=0, atol=1e-5)
    assert report.preprocessing.mean == pytest.approx(tuple(m / 255 for m in MEAN))


def test_checkpoints_the_layout_cannot_hold_are_errors():
    state, _, _ = official_checkpoint()
    _, cfg = build("veri776", *SMALL, device="meta")
    converter = CONVERTERS.get("hrcn")
    extra = dict(state, **{"heads.last_fc_layer.weight": torch.zeros(2, 2)})
    with pytest.raises(Exception, match="last_fc_layer"):
        converter.convert(extra, cfg.model)
    ablated = copy.deepcopy(cfg.model)
    ablated.regional = False
    with pytest.raises(Exception, match="model.regional=true"):
        converter.convert(state, ablated)
    assert converter.implied_settings(state)["model.stage_widths"] == [16, 32, 64]
    assert converter.implied_settings(state)["model.regional_parts"] == 4
    assert math.isclose(converter.preprocessing(state).std[0], STD[0] / 255)


def test_cgm_through_the_config_equals_the_direct_call(tiny_world, tmp_path):
    """`eval.metrics: [..., cgm]` in a config reaches the evaluator and gives what `evaluate_features` gives."""
    from conftest import tiny_overrides
    from vreid.config import load_experiment
    from vreid.engine.evaluate import evaluate_method
    from vreid.engine.extract import extract_features
    from vreid.engine.run import load_data
    from vreid.eval import evaluate_features
    from vreid.methods import DataInfo, build_method

    cfg = load_experiment("configs/hrcn/synthetic.yaml", [
        *tiny_overrides(tiny_world, tmp_path), "model.name=hrcn", "eval.metrics=[map,cmc,minp,cgm]"])
    data = load_data(cfg)
    torch.manual_seed(0)
    method = build_method(cfg.model, DataInfo(num_classes=8, height=32, width=32)).eval()
    got = evaluate_method(method, data, cfg, torch.device("cpu"))
    qf = extract_features(method, data.query, cfg.data, torch.device("cpu"))
    gf = extract_features(method, data.gallery, cfg.data, torch.device("cpu"))
    direct = evaluate_features(qf, gf, [r.vehicle_id for r in data.query], [r.vehicle_id for r in data.gallery],
                               [r.camera_id for r in data.query], [r.camera_id for r in data.gallery],
                               metric=cfg.eval.metric, cgm=True)
    assert got["mCGM"] == pytest.approx(direct.mCGM, abs=1e-9) and 0 < got["mCGM"] <= 1
    without = load_experiment("configs/hrcn/synthetic.yaml", [*tiny_overrides(tiny_world, tmp_path),
                                                               "model.name=hrcn", "eval.metrics=[map,cmc,minp]"])
    assert "mCGM" not in evaluate_method(method, data, without, torch.device("cpu"))
