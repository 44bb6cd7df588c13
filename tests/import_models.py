"""Models for the importer tests: chains evonas can represent, and ones it cannot."""

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Shaped like torchvision's BasicBlock."""

    def __init__(self, inplanes, planes, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


def resnet():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        BasicBlock(16, 16),
        nn.MaxPool2d(2),
        BasicBlock(16, 32, downsample=nn.Conv2d(16, 32, 1, bias=False)),
        BasicBlock(32, 32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def cnn1d():
    return nn.Sequential(
        nn.Conv1d(1, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm1d(16),
        nn.GELU(),
        nn.Flatten(),
        nn.Linear(16 * 10, 32),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(32, 10),
    )


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 3))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5, padding=2)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(6 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        x = x.view(x.size(0), -1)
        return self.fc2(nn.functional.relu(self.fc1(x)))


def net2d():
    return Net()


class ConvBase(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 25, 5, stride=2, padding=1)
        self.lstm = nn.LSTM(19, 10)
        self.linear = nn.Linear(250, 10)

    def forward(self, x):
        return self.linear(self.lstm(self.conv1(x).relu())[0].flatten(1))


def unsupported():
    return nn.Sequential(nn.Conv1d(1, 4, 4, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
                         nn.Flatten(), nn.Linear(4 * 78, 2))  # fmt: skip


class Upsampling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.linear = nn.Linear(4, 10)

    def forward(self, x):
        x = nn.functional.interpolate(self.conv(x), scale_factor=2.0)
        return self.linear(x.mean((2, 3)))


def upsampling():
    return Upsampling()


# --- models users write that evonas must refuse (or fold) with one clear line, never a traceback


def lazy():
    """Its last layer has no shape until data goes through it."""
    return nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def flattened_head():
    """The classifier reads the whole flattened feature map (no global pooling)."""
    return nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 40, 10))  # fmt: skip


class DepthwiseBlock(nn.Module):
    """Named like torchvision's BasicBlock, but depthwise-separable and without a skip."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def depthwise():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), DepthwiseBlock(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))  # fmt: skip


def conv_bias_then_bn():
    """A convolution with a bias followed by batch norm (the PyTorch examples' habit)."""
    return nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4))  # fmt: skip


class Functional(nn.Module):
    """Layers written as functions and tensor methods, with constants, as real code does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding="same")
        self.branch = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(12, 5)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x, scale=1.0):
        x = nn.functional.elu(self.conv(x), 2.0)
        y = nn.functional.hardtanh(self.branch(x), 0.0, 6.0)
        hard_swish = y * nn.functional.relu6(y + 3.0) / 6.0
        x = torch.cat((x, hard_swish), dim=1)
        x = self.act(nn.functional.gelu(x)) - 0.5
        x = nn.functional.avg_pool2d(x, x.size()[2:]).squeeze(-1).squeeze(-1)
        return torch.softmax(self.fc(x.contiguous()), dim=-1)


def functional():
    return Functional()


@torch.fx.wrap
def stochastic_depth(x, p, mode, training=True):
    """Like torchvision.ops.stochastic_depth (which fx does not trace into)."""
    if not training or p == 0.0:
        return x
    keep = torch.empty(x.shape[0], 1, 1, 1).bernoulli_(1 - p) / (1 - p)
    return x * keep


class DenseAndDeep(nn.Module):
    """A one-tensor torch.cat (DenseNet's first layer of a block) and stochastic depth."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.cat([self.conv(x)], 1)
        x = x + stochastic_depth(torch.relu(x), 0.2, "row", self.training)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Sliced(nn.Module):
    """Channel slicing in every block: one grouped error, not one clause per block."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Conv2d(4, 4, 1) for _ in range(5))
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        for block in self.blocks:
            x = torch.cat([block(x)[:, :2], x[:, 2:]], 1)
        return self.fc(x.mean((2, 3))[:, :2])
