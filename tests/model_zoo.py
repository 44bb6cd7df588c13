"""The import coverage set: common CNN families, written here from their papers in the styles
real code uses (modules and functional calls, `view`, `torch.flatten`, `mean`, `torch.cat`,
in-place adds, softmax heads, extra `forward` arguments with defaults).

Each factory takes `classes`, `channels` (of the input) and `width` (a multiplier: the tests use
narrow networks, the import benchmark the papers' widths).
"""

import torch
import torch.nn.functional as F
from torch import nn


def _c(n, width):
    return max(1, int(round(n * width)))


# --- ResNet (He et al. 2016): BasicBlock and Bottleneck with projection shortcuts -------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))  # fmt: skip

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, planes, stride=1):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False),
                                          nn.BatchNorm2d(out))  # fmt: skip

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, layers, classes=10, channels=3, width=1.0):
        super().__init__()
        self.c = _c(64, width)
        self.conv1 = nn.Conv2d(channels, self.c, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for i, n in enumerate(layers):
            planes = _c(64 * 2**i, width)
            blocks = []
            for j in range(n):
                blocks.append(block(self.c, planes, 2 if (i > 0 and j == 0) else 1))
                self.c = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.c, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(classes=10, channels=3, width=1.0):
    return ResNet(BasicBlock, [2, 2, 2, 2], classes, channels, width)


def resnet50(classes=10, channels=3, width=1.0):
    return ResNet(Bottleneck, [3, 4, 6, 3], classes, channels, width)


# --- MobileNetV2 (Sandler et al. 2018): inverted residuals, ReLU6 ------------------------------


class ConvBNAct(nn.Sequential):
    def __init__(self, c_in, c_out, kernel=3, stride=1, groups=1, act=nn.ReLU6):
        layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups,
                            bias=False), nn.BatchNorm2d(c_out)]  # fmt: skip
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, expand):
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers = [ConvBNAct(c_in, hidden, 1)] if expand != 1 else []
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]  # fmt: skip
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def mobilenet_v2(classes=10, channels=3, width=1.0):
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip
    c = _c(32, width)
    features = [ConvBNAct(channels, c, 3, 2)]
    for t, out, n, s in settings:
        for i in range(n):
            features.append(InvertedResidual(c, _c(out, width), s if i == 0 else 1, t))
            c = _c(out, width)
    last = _c(1280, max(1.0, width))
    features.append(ConvBNAct(c, last, 1))
    return MobileNetV2(nn.Sequential(*features), last, classes)


class MobileNetV2(nn.Module):
    def __init__(self, features, last, classes):
        super().__init__()
        self.features = features
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# --- MobileNetV3-small (Howard et al. 2019): hardswish, squeeze-and-excitation ---------------


class SqueezeExcitation(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.relu = nn.ReLU()
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.gate(self.fc2(self.relu(self.fc1(scale))))
        return scale * x


class V3Block(nn.Module):
    def __init__(self, c_in, kernel, hidden, c_out, se, act, stride):
        super().__init__()
        self.use_res = stride == 1 and c_in == c_out
        layers = [ConvBNAct(c_in, hidden, 1, act=act)] if hidden != c_in else []
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcitation(hidden, max(8, hidden // 4)))
        layers.append(ConvBNAct(hidden, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)
        if self.use_res:
            out += x
        return out


def mobilenet_v3_small(classes=10, channels=3, width=1.0):
    hs, re = nn.Hardswish, nn.ReLU
    rows = [(3, 16, 16, True, re, 2), (3, 72, 24, False, re, 2), (3, 88, 24, False, re, 1),
            (5, 96, 40, True, hs, 2), (5, 240, 40, True, hs, 1), (5, 240, 40, True, hs, 1),
            (5, 120, 48, True, hs, 1), (5, 144, 48, True, hs, 1), (5, 288, 96, True, hs, 2),
            (5, 576, 96, True, hs, 1), (5, 576, 96, True, hs, 1)]  # fmt: skip
    c = _c(16, width)
    layers = [ConvBNAct(channels, c, 3, 2, act=hs)]
    for k, hidden, out, se, act, s in rows:
        layers.append(V3Block(c, k, _c(hidden, width), _c(out, width), se, act, s))
        c = _c(out, width)
    layers.append(ConvBNAct(c, 6 * c, 1, act=hs))
    return MobileNetV3(nn.Sequential(*layers), 6 * c, _c(1024, width), classes)


class MobileNetV3(nn.Module):
    def __init__(self, features, c, hidden, classes):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(c, hidden), nn.Hardswish(inplace=True),
                                        nn.Dropout(0.2), nn.Linear(hidden, classes))  # fmt: skip

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- VGG-11 with batch norm (Simonyan & Zisserman 2015), CIFAR-style classifier ----------------


class VGG(nn.Module):
    def __init__(self, classes=10, channels=3, width=1.0):
        super().__init__()
        layers, c = [], channels
        for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, _c(v, width), 3, padding=1), nn.BatchNorm2d(_c(v, width)),
                           nn.ReLU(inplace=True)]  # fmt: skip
                c = _c(v, width)
        self.features = nn.Sequential(*layers)
        hidden = _c(512, width)
        self.classifier = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, classes))  # fmt: skip

    def forward(self, x):
        out = self.features(x)
        out = out.view(out.size(0), -1)
        return self.classifier(out)


def vgg11_bn(classes=10, channels=3, width=1.0):
    return VGG(classes, channels, width)


# --- SqueezeNet 1.1 (Iandola et al. 2016): Fire modules, concatenation, conv classifier ---------


class Fire(nn.Module):
    def __init__(self, c_in, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.act(self.squeeze(x))
        return torch.cat([self.act(self.expand1x1(x)), self.act(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, classes=10, channels=3, width=1.0):
        super().__init__()
        w = width
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.features = nn.Sequential(
            nn.Conv2d(channels, _c(64, w), 3, 2), nn.ReLU(inplace=True), pool,
            Fire(_c(64, w), _c(16, w), _c(64, w)), Fire(_c(128, w), _c(16, w), _c(64, w)),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(_c(128, w), _c(32, w), _c(128, w)), Fire(_c(256, w), _c(32, w), _c(128, w)),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(_c(256, w), _c(48, w), _c(192, w)), Fire(_c(384, w), _c(48, w), _c(192, w)),
            Fire(_c(384, w), _c(64, w), _c(256, w)), Fire(_c(512, w), _c(64, w), _c(256, w)),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(_c(512, w), classes, 1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )  # fmt: skip

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet1_1(classes=10, channels=3, width=1.0):
    return SqueezeNet(classes, channels, width)


# --- DenseNet-style (Huang et al. 2017): dense block, transition ------------------------------


class DenseLayer(nn.Module):
    def __init__(self, c_in, growth):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class DenseNet(nn.Module):
    def __init__(self, classes=10, channels=3, width=1.0, blocks=(4, 4), growth=12):
        super().__init__()
        growth = _c(growth, width)
        c = 2 * growth
        self.conv1 = nn.Conv2d(channels, c, 3, padding=1, bias=False)
        stages = []
        for i, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if i < len(blocks) - 1:
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                           nn.AvgPool2d(2)]  # fmt: skip
                c //= 2
            stages.append(nn.Sequential(*layers))
        self.dense = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, classes)

    def forward(self, x):
        out = F.relu(self.bn(self.dense(self.conv1(x))))
        out = F.avg_pool2d(out, out.shape[-1])
        return self.linear(out.view(out.size(0), -1))


def densenet(classes=10, channels=3, width=1.0):
    return DenseNet(classes, channels, width)


# --- EfficientNet-B0-style (Tan & Le 2019): MBConv with SE and SiLU ----------------------------


def swish(x):
    return x * x.sigmoid()


class MBConv(nn.Module):
    def __init__(self, c_in, c_out, kernel, stride, expand, se_ratio=0.25):
        super().__init__()
        hidden = c_in * expand
        self.expand = expand
        self.conv1 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden,
                               bias=False)  # fmt: skip
        self.bn2 = nn.BatchNorm2d(hidden)
        squeeze = max(1, int(c_in * se_ratio))
        self.se1 = nn.Conv2d(hidden, squeeze, 1)
        self.se2 = nn.Conv2d(squeeze, hidden, 1)
        self.conv3 = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x, drop_rate=0.0):
        out = x if self.expand == 1 else swish(self.bn1(self.conv1(x)))
        out = F.silu(self.bn2(self.conv2(out)))
        scale = out.mean((2, 3), keepdim=True)
        scale = torch.sigmoid(self.se2(F.silu(self.se1(scale))))
        out = self.bn3(self.conv3(out * scale))
        if self.skip:
            if self.training and drop_rate > 0:
                out = F.dropout(out, drop_rate)
            out = out + x
        return out


class EfficientNet(nn.Module):
    def __init__(self, classes=10, channels=3, width=1.0):
        super().__init__()
        rows = [(1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2),
                (6, 112, 3, 5, 1), (6, 192, 4, 5, 2), (6, 320, 1, 3, 1)]  # fmt: skip
        c = _c(32, width)
        self.stem = nn.Sequential(nn.Conv2d(channels, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c),
                                  nn.SiLU())  # fmt: skip
        blocks = []
        for t, out, n, k, s in rows:
            for i in range(n):
                blocks.append(MBConv(c, _c(out, width), k, s if i == 0 else 1, t))
                c = _c(out, width)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(c, _c(1280, width), 1, bias=False),
                                  nn.BatchNorm2d(_c(1280, width)), nn.SiLU())  # fmt: skip
        self.linear = nn.Linear(_c(1280, width), classes)

    def forward(self, x, dropout=0.2):
        out = self.head(self.blocks(self.stem(x)))
        out = out.mean([2, 3])
        out = F.dropout(out, dropout, training=self.training)
        return self.linear(out)


def efficientnet_b0(classes=10, channels=3, width=1.0):
    return EfficientNet(classes, channels, width)


# --- LeNet-5 (LeCun et al. 1998), the PyTorch MNIST example, a 1D CNN -------------------------


class LeNet5(nn.Module):
    def __init__(self, classes=10, channels=1, width=1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, _c(6, width), 5, padding=2)
        self.conv2 = nn.Conv2d(_c(6, width), _c(16, width), 5)
        self.fc1 = nn.Linear(_c(16, width) * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = x.view(-1, self.num_flat(x))
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))

    @staticmethod
    def num_flat(x):
        return x.size(1) * x.size(2) * x.size(3)


def lenet5(classes=10, channels=1, width=1.0):
    return LeNet5(classes, channels, width)


class MnistNet(nn.Module):
    """Shaped like the PyTorch examples' MNIST net: valid convolutions, log_softmax."""

    def __init__(self, classes=10, channels=1, width=1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, _c(32, width), 3, 1)
        self.conv2 = nn.Conv2d(_c(32, width), _c(64, width), 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(_c(64, width) * 12 * 12, _c(128, width))
        self.fc2 = nn.Linear(_c(128, width), classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def mnist_net(classes=10, channels=1, width=1.0):
    return MnistNet(classes, channels, width)


class Conv1dNet(nn.Module):
    """A 1D CNN with valid (unpadded) convolutions, as in the MNIST-1D paper's baselines."""

    def __init__(self, classes=10, channels=1, width=1.0, length=40):
        super().__init__()
        c = _c(25, width)
        self.conv1 = nn.Conv1d(channels, c, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(c, c, 3, stride=2, padding="valid")
        self.conv3 = nn.Conv1d(c, c, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm1d(c)
        for kernel, padding in ((5, 1), (3, 0), (3, 1)):
            length = (length + 2 * padding - kernel) // 2 + 1
        self.linear = nn.Linear(c * length, classes)

    def forward(self, x, verbose=False):
        h1 = self.conv1(x).relu()
        h2 = self.conv2(h1).relu()
        h3 = F.leaky_relu(self.bn(self.conv3(h2)), 0.1)
        return self.linear(h3.view(h3.shape[0], -1))


def conv1d_net(classes=10, channels=1, width=1.0, length=40):
    return Conv1dNet(classes, channels, width, length)


# name -> (factory, input shape for the tests, for the import benchmark)
ZOO = {
    "resnet18": (resnet18, (3, 32, 32)),
    "resnet50": (resnet50, (3, 32, 32)),
    "mobilenet_v2": (mobilenet_v2, (3, 32, 32)),
    "mobilenet_v3_small": (mobilenet_v3_small, (3, 32, 32)),
    "vgg11_bn": (vgg11_bn, (3, 32, 32)),
    "squeezenet1_1": (squeezenet1_1, (3, 32, 32)),
    "densenet": (densenet, (3, 32, 32)),
    "efficientnet_b0": (efficientnet_b0, (3, 32, 32)),
    "lenet5": (lenet5, (1, 28, 28)),
    "mnist_net": (mnist_net, (1, 28, 28)),
    "conv1d_net": (conv1d_net, (1, 40)),
}


def digits_images(size=32, channels=3, limit=600):
    """A task for the zoo: sklearn's digits, scaled to `size` x `size` and repeated over
    `channels` (the images the coverage models are made for); size 0: each image's 64 pixels
    as a (1, 64) signal."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images[:limit] / 16.0).astype(np.float32)
    y = bunch.target[:limit]
    cut = len(x) * 2 // 3
    if size == 0:
        x = x.reshape(len(x), 1, 64)
        return {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:]}
    scale = -(-size // 8)
    x = np.kron(x, np.ones((1, scale, scale), np.float32))[:, :size, :size]
    x = np.repeat(x[:, None], channels, axis=1)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_val": x[cut:], "y_val": y[cut:]}


def trained(name, width=0.25, steps=30, seed=0):
    """A zoo model briefly trained on `digits_images` (so that accuracies mean something), and
    its accuracy on the validation split."""
    factory, shape = ZOO[name]
    if len(shape) == 2:  # the 1D model reads the digits as 64-sample signals
        data, model_args = digits_images(0), {"length": 64}
    else:
        data, model_args = digits_images(shape[-1], shape[0]), {}
    torch.manual_seed(seed)
    model = factory(channels=shape[0], width=width, **model_args)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"]).long()
    model.train()
    for step in range(steps):
        batch = torch.arange(step * 32, step * 32 + 32) % len(x)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(data["x_val"])).argmax(1)
    correct = int((predicted == torch.from_numpy(data["y_val"])).sum())
    return model, correct / len(predicted)
