"""A user model loaded from a file (``--model tests/models/my_model.py:make --input 3x8x8``):
a stem convolution, one residual block with batch norm, global pooling and a classifier."""
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x)


class Net(nn.Module):
    def __init__(self, ch: int = 4, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, ch, 3, padding=1)
        self.block = Block(ch)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, classes)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


def make() -> nn.Module:
    return Net()
