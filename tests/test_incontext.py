"""In-context attribution on real torch iterations, checked against hand-derived node lists.

Every list below was derived by hand from the model and torch's autograd: which aten call (or
autograd function) of a real training iteration each graph node receives. No timing thresholds:
the accounting identities checked here hold exactly whatever the machine's load.
"""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from costdb.errors import CostdbError
from profiler.incontext import attribution_names, calibrate_overhead, profile_in_context
from profiler.iteration import measure_iteration, model_trainer, trainer
from profiler.zoo import ModelInstance, instance_graph, model_graph

MY_MODEL = str(Path(__file__).parent / "models" / "my_model.py") + ":make"
SHARED = ["zero_grad (shared)", "step (shared)", "aten::add_"]
LINEAR_DATA = ["AddmmBackward0", "TBackward0"]
LINEAR_WEIGHT = ["AddmmBackward0", "AccumulateGrad", "TBackward0", "AccumulateGrad"]


class TwoLayerMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(12, 8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


def _trainer(module, shape, batch):
    torch.manual_seed(0)
    inst = ModelInstance("t", module, shape, batch)
    return trainer(inst, instance_graph(inst, batch))


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_mlp_nodes_get_exactly_their_calls():
    tr = _trainer(TwoLayerMLP(), (3, 4), 4)
    got = attribution_names(tr)
    assert got["unattributed"] == []
    assert got["nodes"] == {
        # the flatten of the input is a view: it goes to its first consumer
        "fc1:fwd": ["aten::flatten", "aten::linear"],
        "relu:fwd": ["aten::relu"],
        "fc2:fwd": ["aten::linear"],
        "loss:fwd": ["aten::cross_entropy_loss"],
        "loss:bwd_data": ["NllLossBackward0", "LogSoftmaxBackward0"],
        # addmm's backward computes input and weight gradients in one call: split between both
        "fc2:bwd_data": LINEAR_DATA,
        "fc2:bwd_weight": LINEAR_WEIGHT,
        "fc2.weight:update": SHARED, "fc2.bias:update": SHARED,
        "relu:bwd_data": ["ReluBackward0"],
        # the first layer's input needs no gradient: no bwd_data node, all to bwd_weight
        "fc1:bwd_weight": LINEAR_WEIGHT,
        "fc1.weight:update": SHARED, "fc1.bias:update": SHARED,
    }


def test_file_model_cnn_with_residual_and_batch_norm():
    tr = model_trainer(MY_MODEL, 2, (3, 8, 8))
    got = attribution_names(tr)
    assert got["unattributed"] == []
    assert got["nodes"] == {
        "stem:fwd": ["aten::conv2d"],
        "block_conv:fwd": ["aten::conv2d"],
        # num_batches_tracked += 1 runs inside the BatchNorm module call
        "block_bn:fwd": ["aten::add_", "aten::batch_norm"],
        "add:fwd": ["aten::add"],
        "block_relu:fwd": ["aten::relu"],
        "pool:fwd": ["aten::adaptive_avg_pool2d", "aten::flatten"],
        "fc:fwd": ["aten::linear"],
        "loss:fwd": ["aten::cross_entropy_loss"],
        "loss:bwd_data": ["NllLossBackward0", "LogSoftmaxBackward0"],
        "fc:bwd_data": LINEAR_DATA,
        "fc:bwd_weight": LINEAR_WEIGHT,
        "fc.weight:update": SHARED, "fc.bias:update": SHARED,
        "pool:bwd_data": ["ViewBackward0", "MeanBackward1"],
        "block_relu:bwd_data": ["ReluBackward0"],
        "add:bwd_data": ["AddBackward0"],
        "block_bn:bwd_data": ["NativeBatchNormBackward0"],
        "block_bn:bwd_weight": ["NativeBatchNormBackward0", "AccumulateGrad", "AccumulateGrad"],
        "block_bn.weight:update": SHARED, "block_bn.bias:update": SHARED,
        # the fused convolution_backward, split between the two nodes
        "block_conv:bwd_data": ["ConvolutionBackward0"],
        "block_conv:bwd_weight": ["ConvolutionBackward0", "AccumulateGrad"],
        "block_conv.weight:update": SHARED,
        # the stem's output feeds the block's conv and the residual add: the engine sums the two
        # gradients (in place) after the second arrives
        "stem:grad_accumulate1": ["aten::add_"],
        "stem:bwd_weight": ["ConvolutionBackward0", "AccumulateGrad", "AccumulateGrad"],
        "stem.weight:update": SHARED, "stem.bias:update": SHARED,
    }


def test_transformer_every_node_attributed():
    tr = model_trainer("bert-tiny", 2, (16,))
    got = attribution_names(tr)
    assert got["unattributed"] == []
    nodes = got["nodes"]
    assert all(nodes[n.name] for n in tr.graph.nodes), [k for k, v in nodes.items() if not v]
    params = list(tr.module.parameters())
    calls = [c for v in nodes.values() for c in v]
    # every parameter: one AccumulateGrad, one SGD add_ in its own update node
    assert calls.count("AccumulateGrad") == len(params)
    upd = [n.name for n in tr.graph.nodes if n.phase == "update"]
    assert len(upd) == len(params) and all(nodes[u] == SHARED for u in upd)
    # attention: views and the final [CLS] select ride with the node owning their memory
    assert nodes["layers_0_attn_k:fwd"] == ["aten::linear", "aten::view", "aten::transpose",
                                            "aten::transpose"]
    assert nodes["layers_1_ln2:fwd"] == ["aten::layer_norm", "aten::select"]
    assert "SelectBackward0" in nodes["layers_1_ln2:bwd_data"]
    # the embeddings' LayerNorm output feeds q, k, v and the residual: 3 gradient sums
    assert [nodes[f"ln:grad_accumulate{k}"] for k in (1, 2, 3)] == [["aten::add_"]] * 3


def test_accounting_partitions_the_profiled_iteration():
    tr = model_trainer(MY_MODEL, 2, (3, 8, 8))
    res = profile_in_context(tr, iterations=3, warmups=1)
    # noisy figures (median CV across ops > 10 %) are profiled again with as many iterations
    assert res.iterations == (6 if res.settings["remeasured"] else 3)
    for j in range(res.iterations):
        raw = sum(v[j] for v in res.raw_node_samples.values())
        # every microsecond of the profiled iteration is a node's or reported unattributed
        assert math.isclose(raw + res.unattributed_samples[j], res.wall_samples[j], rel_tol=1e-9)
        assert all(v[j] >= 0.0 for v in res.node_samples.values())
    # per-signature figures: mean over occurrences, so figure x occurrences sums to the nodes
    sig = res.signature_figures()
    for j in range(res.iterations):
        total = sum(f["values"][j] * f["occurrences"] for f in sig.values())
        assert math.isclose(total, sum(v[j] for v in res.node_samples.values()), rel_tol=1e-9)
    assert sum(f["occurrences"] for f in sig.values()) == len(tr.graph.nodes)
    assert set(res.unattributed_detail) == {"between phases"}
    phases = res.phases()
    assert math.isclose(phases["total"], phases["fwd"] + phases["bwd"] + phases["update"])
    # the in-situ correction: per phase, the nodes sum to the interleaved plain iterations'
    # median (events per node are the same every iteration, so medians shift exactly) unless a
    # node had to be clamped at zero, which can only raise the sum
    assert res.settings["correction"] == "in_situ"
    for g, plain in res.settings["plain_phase_s"].items():
        assert phases[g] >= plain * (1 - 1e-6)
        if all(min(v) > 0 for v in res.node_samples.values()):
            assert math.isclose(phases[g], plain, rel_tol=1e-6)


def test_calibrated_correction_only_removes_time():
    tr = model_trainer(MY_MODEL, 2, (3, 8, 8))
    res = profile_in_context(tr, iterations=3, warmups=1, correction="calibrated")
    assert res.settings["correction"] == "calibrated" and res.settings["overhead"]["per_event_s"] >= 0
    for j in range(res.iterations):
        for i, v in res.node_samples.items():
            assert 0.0 <= v[j] <= res.raw_node_samples[i][j]


def test_samples_are_means_of_blocks_of_iterations():
    tr = model_trainer(MY_MODEL, 2, (3, 8, 8))
    res = profile_in_context(tr, iterations=10, warmups=1, block=5)
    assert res.block == 5
    for f in res.signature_figures().values():
        # 10 (or, remeasured, 20) iterations -> 2 (4) samples, each a mean of 5 iterations
        assert len(f["values"]) == res.iterations // 5
        nodes = f["nodes"]
        first = [sum(res.node_samples[i][j] for i in nodes) / len(nodes) for j in range(5)]
        assert math.isclose(f["values"][0], sum(first) / 5, rel_tol=1e-9)


def test_fused_backward_split_follows_the_isolated_ratio():
    tr = model_trainer(MY_MODEL, 2, (3, 8, 8))
    sig = {n.name: n.signature for n in tr.graph.nodes}
    got = attribution_names(tr, isolated={sig["block_conv:bwd_data"]: 3e-6,
                                          sig["block_conv:bwd_weight"]: 1e-6,
                                          sig["fc:bwd_data"]: 1e-6, sig["fc:bwd_weight"]: 1e-6,
                                          sig["block_bn:bwd_data"]: 2e-6,
                                          sig["block_bn:bwd_weight"]: 2e-6})
    shares = {names: sh for kind, names, sh in got["units"] if kind == "op"}
    # the one fused convolution_backward call, 3:1 as its two isolated halves
    conv = [sh for kind, names, sh in got["units"] if names == ("ConvolutionBackward0",)
            and "block_conv:bwd_data" in sh]
    assert conv == [{"block_conv:bwd_data": 0.75, "block_conv:bwd_weight": 0.25}]
    assert shares[("NativeBatchNormBackward0",)] == {"block_bn:bwd_data": 0.5,
                                                     "block_bn:bwd_weight": 0.5}
    # the stem's convolution has no input gradient: all of it is bwd_weight
    assert [sh for kind, names, sh in got["units"] if names == ("ConvolutionBackward0",)
            and "stem:bwd_weight" in sh] == [{"stem:bwd_weight": 1.0}]


def test_overhead_calibration_is_model_independent():
    ov = calibrate_overhead(calls=200, trials=3)
    assert ov.per_event_s >= 0 and ov.per_range_s > 0


def test_file_model_iteration_with_phases():
    it = measure_iteration(MY_MODEL, 2, (3, 8, 8), warmups=1, samples=4)
    assert it["samples"] == 4 and it["optimizer"] == "sgd(foreach=False)"
    for j, total in enumerate(it["values"]):
        parts = sum(it["phases"][k]["values"][j] for k in ("fwd", "bwd", "update"))
        assert math.isclose(parts, total, rel_tol=1e-9)
    assert {"fwd_s", "bwd_s", "update_s"} <= set(it)


def test_batch_one_batch_norm_keeps_its_error():
    with pytest.raises(CostdbError, match="does not accept an input of shape .*check --input and --batch"):
        model_graph("resnet18", batch=1)
    with pytest.raises(CostdbError, match="check --input and --batch"):
        model_trainer(MY_MODEL, 1, (3, 1, 1))
