"""Training graphs: structure, FLOPs and bytes against hand-computed values."""
from __future__ import annotations

from collections import Counter

import pytest
import torch.nn as nn

from costdb.errors import CostdbError
from profiler.graph import build_graph
from profiler.signature import signature
from profiler.zoo import MODELS, model_graph


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(3, 2, bias=False)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


def test_small_mlp_nodes_flops_and_bytes():
    g = build_graph(TwoLinear(), (4,), batch=5, name="two")
    by_name = {n.name: n for n in g.nodes}
    assert [n.name for n in g.nodes] == [
        "fc1:fwd", "relu:fwd", "fc2:fwd", "loss:fwd", "loss:bwd_data",
        "fc2:bwd_data", "fc2:bwd_weight", "fc2.weight:update",
        "relu:bwd_data", "fc1:bwd_weight", "fc1.weight:update", "fc1.bias:update"]
    # the first layer's input is data: no gradient w.r.t. it
    assert "fc1:bwd_data" not in by_name
    fc1 = by_name["fc1:fwd"]
    assert fc1.flops == 2 * 5 * 4 * 3 + 5 * 3          # 2*M*K*N + bias adds
    assert fc1.output_bytes == 5 * 3 * 4                # float32 activations
    assert fc1.param_bytes == (4 * 3 + 3) * 4
    assert by_name["fc2:fwd"].flops == 2 * 5 * 3 * 2    # no bias
    assert by_name["fc2:bwd_data"].flops == 2 * 5 * 3 * 2
    assert by_name["fc2:bwd_weight"].output_bytes == 3 * 2 * 4
    assert by_name["relu:fwd"].flops == 5 * 3
    assert by_name["fc2.weight:update"].flops == 2 * 6
    # dependencies: relu backward needs its output and the incoming gradient
    assert set(by_name["relu:bwd_data"].deps) == {by_name["relu:fwd"].idx, by_name["fc2:bwd_data"].idx}
    assert set(by_name["fc1:bwd_weight"].deps) == {by_name["relu:bwd_data"].idx}  # input is data
    assert by_name["fc1.weight:update"].deps == (by_name["fc1:bwd_weight"].idx,)
    assert all(d < n.idx for n in g.nodes for d in n.deps)
    assert g.param_bytes == ((4 * 3 + 3) + 3 * 2) * 4
    assert g.activation_bytes == (15 + 15 + 10) * 4


def test_tinycnn_conv_flops_and_pool_shapes():
    g = model_graph("tinycnn", batch=2, input_shape=(3, 16, 16))
    n = {x.name: x for x in g.nodes}
    # conv1: 8 out channels, 16x16 output, 3x3x3 kernel, batch 2
    macs = 2 * 8 * 16 * 16 * 3 * 3 * 3
    assert n["conv1:fwd"].flops == 2 * macs + 2 * 8 * 16 * 16
    assert n["conv1:fwd"].output_bytes == 2 * 8 * 16 * 16 * 4
    assert n["pool1:fwd"].output_shape == (2, 8, 8, 8)
    assert n["conv2:bwd_data"].flops == 2 * (2 * 16 * 8 * 8 * 8 * 9)
    assert n["fc:fwd"].input_shapes == ((2, 256),)      # flatten folded into the consumer


def test_residual_gradients_accumulate():
    g = model_graph("resnet18", batch=2, input_shape=(3, 32, 32))
    phases = Counter(n.phase for n in g.nodes)
    assert phases["fwd"] == 68 and phases["loss"] == 1
    # 20 convs + 20 BN + 1 fc have weights -> 41 bwd_weight; 62 parameter tensors -> 62 updates
    assert phases["bwd_weight"] == 41 and phases["update"] == 62
    acc = [x for x in g.nodes if x.op == "grad_accumulate"]
    assert len(acc) == 8                                 # one per residual block
    assert sum(x.param_bytes for x in g.nodes) == 4 * sum(
        p.numel() for p in MODELS["resnet18"].make((3, 32, 32), 10).parameters())


def test_signatures_are_stable_and_shared_between_models():
    a = model_graph("resnet18", batch=2)
    b = model_graph("resnet18", batch=2)
    assert [n.signature for n in a.nodes] == [n.signature for n in b.nodes]
    assert len(a.signatures()) < len(a.nodes)            # repeated blocks share ops
    spec = a.nodes[0].spec()
    assert signature(spec) == a.nodes[0].signature
    assert signature({**spec, "dtype": "float16"}) != a.nodes[0].signature
    # a different batch changes every signature except the optimizer updates (batch-free)
    c = model_graph("resnet18", batch=4)
    shared = set(a.signatures()) & set(c.signatures())
    assert shared == {n.signature for n in a.nodes if n.phase == "update"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_zoo_model_builds(name):
    g = model_graph(name, batch=2)
    assert g.nodes and all(n.signature for n in g.nodes)
    assert {n.phase for n in g.nodes} == {"fwd", "loss", "bwd_data", "bwd_weight", "update"}


def test_user_model_from_file(tmp_path):
    f = tmp_path / "my model.py"
    f.write_text("import torch.nn as nn\n"
                 "def make():\n    return nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))\n")
    g = model_graph(f"{f}:make", batch=2, input_shape=(6,))
    assert [x.op for x in g.nodes if x.phase == "fwd"] == ["linear", "tanh", "linear"]


def test_unsupported_module_is_a_clear_error():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 4)

        def forward(self, x):
            return self.rnn(x)[0]
    with pytest.raises(CostdbError, match="module 'rnn' of type GRU is not supported"):
        build_graph(Weird(), (3, 4), batch=2)


def test_graph_json_round_trip():
    g = model_graph("mlp", batch=2)
    from profiler.graph import TrainingGraph
    assert TrainingGraph.from_json(g.to_json()) == g
