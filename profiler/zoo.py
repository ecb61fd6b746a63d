"""The model zoo, written with ``torch.nn`` only (no torchvision: its PyPI wheel fails to import
beside the CPU torch build used here). Architectures follow torchvision / the BERT paper; input
size, batch size and class count are parameters. User models load from ``file.py:factory``.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from costdb.errors import CostdbError
from profiler.graph import TrainingGraph, build_graph


# --- ResNet ------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inp: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp: int, planes: int, stride: int = 1):
        super().__init__()
        out_ch = planes * 4
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.downsample = None
        if stride != 1 or inp != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out_ch, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


class ResNet(nn.Module):
    """torchvision's ImageNet ResNet (7x7 stem + max-pool), any input size."""

    def __init__(self, block, layers: list[int], num_classes: int = 10, in_ch: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(inp, planes, stride))
                inp = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


# --- VGG, MobileNetV2 -------------------------------------------------------------------------

class VGG16(nn.Module):
    """torchvision's VGG-16 (configuration D) with its 7x7 adaptive pool and 4096-wide head."""

    CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

    def __init__(self, num_classes: int = 10, in_ch: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_ch
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0)."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 10, in_ch: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                   nn.ReLU6()]
        c = 32
        for t, ch, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(c, ch, s if i == 0 else 1, t))
                c = ch
        layers += [nn.Conv2d(c, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


# --- transformer encoder, MLP, tiny CNN --------------------------------------------------------

class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.dh = heads, hidden // heads
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.softmax = nn.Softmax(dim=-1)
        self.out = nn.Linear(hidden, hidden)
        self.scale = float(self.dh) ** 0.5

    def forward(self, x):
        b, s, h = x.shape
        q = self.q(x).view(b, s, self.heads, self.dh).transpose(1, 2)
        k = self.k(x).view(b, s, self.heads, self.dh).transpose(1, 2)
        v = self.v(x).view(b, s, self.heads, self.dh).transpose(1, 2)
        att = self.softmax(torch.matmul(q, k.transpose(-2, -1)) / self.scale)
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(b, s, h)
        return self.out(ctx)


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.attn = SelfAttention(hidden, heads)
        self.ln1 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, ffn)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden)

    def forward(self, x):
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.ff2(self.act(self.ff1(x))))


class TransformerEncoder(nn.Module):
    """BERT-tiny-sized encoder (2 layers, hidden 128, 2 heads, FFN 512) with a [CLS] classifier."""

    def __init__(self, vocab: int = 30522, seq_len: int = 128, hidden: int = 128, layers: int = 2,
                 heads: int = 2, ffn: int = 512, num_classes: int = 2):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(seq_len, hidden)
        self.register_buffer("positions", torch.arange(seq_len).unsqueeze(0), persistent=False)
        self.ln = nn.LayerNorm(hidden)
        self.layers = nn.Sequential(*[EncoderLayer(hidden, heads, ffn) for _ in range(layers)])
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, ids):
        x = self.ln(self.tok(ids) + self.pos(self.positions))
        x = self.layers(x)
        return self.head(x[:, 0])


class MLP(nn.Module):
    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (256, 128), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        c = in_features
        for h in hidden:
            layers += [nn.Linear(c, h), nn.ReLU()]
            c = h
        layers.append(nn.Linear(c, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class TinyCNN(nn.Module):
    """A microcontroller-sized CNN using only ops the Cortex-M firmware implements."""

    def __init__(self, in_ch: int = 3, num_classes: int = 10, side: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * (side // 4) ** 2, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(self.flatten(x))


# --- registry ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    default_input: tuple[int, ...]
    default_batch: int
    make: Callable[[tuple[int, ...], int], nn.Module]  # (input_shape, num_classes) -> module
    input_dtype: str | None = None


def _ch(shape):
    if len(shape) != 3:
        raise CostdbError(f"this model needs a CxHxW input, got {'x'.join(map(str, shape))}")
    return shape[0]


MODELS: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("resnet18", "ResNet-18 (torchvision layout)", (3, 32, 32), 8,
             lambda s, k: ResNet(BasicBlock, [2, 2, 2, 2], k, _ch(s))),
    ZooModel("resnet50", "ResNet-50 (torchvision layout)", (3, 32, 32), 8,
             lambda s, k: ResNet(Bottleneck, [3, 4, 6, 3], k, _ch(s))),
    ZooModel("vgg16", "VGG-16 with the 4096-wide classifier", (3, 32, 32), 8,
             lambda s, k: VGG16(k, _ch(s))),
    ZooModel("mobilenetv2", "MobileNetV2 (width 1.0)", (3, 32, 32), 8,
             lambda s, k: MobileNetV2(k, _ch(s))),
    ZooModel("bert-tiny", "Transformer encoder, BERT-tiny size (input = sequence length)", (128,), 8,
             lambda s, k: TransformerEncoder(seq_len=s[0], num_classes=k), input_dtype="int64"),
    ZooModel("mlp", "MLP 784-256-128-classes", (784,), 32,
             lambda s, k: MLP(int(torch.tensor(s).prod()), num_classes=k)),
    ZooModel("tinycnn", "Two-conv CNN sized for microcontrollers", (3, 16, 16), 1,
             lambda s, k: TinyCNN(_ch(s), k, s[1])),
]}


def load_factory(ref: str) -> Callable[[], nn.Module]:
    """``path/to/file.py:factory`` -> the factory callable (a class or function)."""
    path, sep, attr = ref.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise CostdbError(f"model reference {ref!r} must look like path/to/file.py:factory")
    file = Path(path)
    if not file.is_file():
        raise CostdbError(f"model file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"costdb_user_model_{abs(hash(file.resolve()))}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise CostdbError(f"importing {path} failed: {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CostdbError(f"{path} has no callable {attr!r}")
    return factory


@dataclass
class ModelInstance:
    """A model ready to train: the module and what its graph and its training batches need."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    default_batch: int
    input_dtype: str | None = None
    input_high: int | None = None   # vocabulary size of token-id inputs


def is_file_model(model: str) -> bool:
    return ":" in model and model.split(":")[0].endswith(".py")


def instantiate(model: str, input_shape: tuple[int, ...] | None = None,
                num_classes: int = 10) -> ModelInstance:
    """A fresh module (seeded) for a zoo name or ``file.py:factory``, with its input shape."""
    torch.manual_seed(0)
    if is_file_model(model):
        if input_shape is None:
            raise CostdbError("a user model needs --input, e.g. --input 3x32x32")
        module = load_factory(model)()
        if not isinstance(module, nn.Module):
            raise CostdbError(f"{model} did not return a torch.nn.Module")
        name = Path(model.split(":")[0]).stem + ":" + model.rsplit(":", 1)[1]
        return ModelInstance(name, module, tuple(input_shape), 8)
    zm = MODELS.get(model)
    if zm is None:
        from costdb.errors import did_you_mean
        raise CostdbError(f"unknown model {model!r}{did_you_mean(model, MODELS)}; known models: "
                          f"{', '.join(MODELS)} (or path/to/file.py:factory)")
    shape = tuple(input_shape or zm.default_input)
    module = zm.make(shape, num_classes)
    high = module.tok.num_embeddings if zm.input_dtype == "int64" else None
    return ModelInstance(zm.name, module, shape, zm.default_batch, zm.input_dtype, high)


def instance_graph(inst: ModelInstance, batch: int | None = None,
                   dtype: str = "float32") -> TrainingGraph:
    """Training graph of an instantiated model (the module is put in train mode, cast to dtype)."""
    return build_graph(inst.module, inst.input_shape, batch or inst.default_batch, name=inst.name,
                       dtype=dtype, input_dtype=inst.input_dtype, input_high=inst.input_high)


def model_graph(model: str, batch: int | None = None, input_shape: tuple[int, ...] | None = None,
                num_classes: int = 10, dtype: str = "float32") -> TrainingGraph:
    """Training graph of a zoo model by name, or of a user model given as ``file.py:factory``."""
    return instance_graph(instantiate(model, input_shape, num_classes), batch, dtype)
