"""The model zoo: every conv and max-pool layer of published architectures.

Each network lists its layers by their usual names with the shape of one sample
(float32, PyTorch layouts), and a training batch. Layers of identical geometry are
timed once: :data:`LAYERS` holds the distinct shapes, each with every (network,
layer) it comes from, and :func:`workloads` expands them to batch 1 and the
training batch of the first network that has the shape.

Conventions
-----------
- Padding is "same" (``dilation * (k // 2)``) unless stated; LeNet-5 uses none.
- LeNet-5's subsampling layers are timed as 2x2 max-pools (its modern form; convkern
  has max pooling only).
- A transposed convolution (the U-Nets' 2x2 stride-2 up-convolutions) is the adjoint
  of a convolution from its output to its input: it is listed as that convolution,
  whose input gradient is the up-convolution's forward, whose forward is the
  up-convolution's input gradient and whose weight gradient is the same.
- WaveNet's causal dilated convolutions pad ``d`` on both sides and drop the last
  ``d`` outputs (as its common PyTorch implementations do), so the convolution timed
  is the padded one.
"""

from dataclasses import dataclass, replace

from workloads import ConvWorkload, PoolWorkload


@dataclass(frozen=True)
class Network:
    """One architecture.

    Parameters
    ----------
    key : str
        Short name used in tables and on the command line.
    title : str
        What it is (and the input size).
    train_batch : int
        The training batch timed besides batch 1.
    layers : tuple of (str, ConvWorkload or PoolWorkload)
        Layer name and its shape at batch 1 (the workload name is unused).
    """

    key: str
    title: str
    train_batch: int
    layers: tuple


def conv(c, f, size, k, stride=1, padding=None, dilation=1, groups=1):
    """Return a batch-1 ConvWorkload; `size` and `k` are tuples (the dims) or ints (2-D).

    ``padding=None`` means "same" for odd kernels: ``dilation * (k // 2)``.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    d = len(size)
    k = (k,) * d if isinstance(k, int) else tuple(k)
    pad = tuple(dilation * (kk // 2) for kk in k) if padding is None else (padding,) * d
    return ConvWorkload("", 1, c, f, size, k, (stride,) * d, pad, (dilation,) * d, groups)


def pool(c, size, k=2, stride=None, padding=0):
    """Return a batch-1 PoolWorkload; `size` is a tuple (the dims) or an int (2-D)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return PoolWorkload("", 1, c, size, k, stride or k, padding)


def _lenet5():
    return (
        ("C1", conv(1, 6, 32, 5, padding=0)),
        ("S2", pool(6, 28)),
        ("C3", conv(6, 16, 14, 5, padding=0)),
        ("S4", pool(16, 10)),
        ("C5", conv(16, 120, 5, 5, padding=0)),
    )


def _vgg16_cifar():
    layers = []
    c, size = 3, 32
    for block, (width, reps) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
        for i in range(1, reps + 1):
            layers.append((f"conv{block}_{i}", conv(c, width, size, 3)))
            c = width
        layers.append((f"pool{block}", pool(c, size)))
        size //= 2
    return tuple(layers)


def _resnet18_stages(c, size):
    """The four stages of ResNet-18 (two basic blocks each), from `c` channels at `size`."""
    layers = []
    for stage, width in enumerate((64, 128, 256, 512), 1):
        stride = 1 if stage == 1 else 2
        out = size // stride
        for block in range(2):
            name = f"layer{stage}.{block}"
            if block == 0:
                layers.append((f"{name}.conv1", conv(c, width, size, 3, stride=stride)))
                if stride != 1:
                    layers.append((f"{name}.downsample",
                                   conv(c, width, size, 1, stride=stride)))
            else:
                layers.append((f"{name}.conv1", conv(width, width, out, 3)))
            layers.append((f"{name}.conv2", conv(width, width, out, 3)))
            c = width
        size = out
    return layers


def _resnet18_224():
    return (
        ("conv1", conv(3, 64, 224, 7, stride=2, padding=3)),
        ("maxpool", pool(64, 112, k=3, stride=2, padding=1)),
        *_resnet18_stages(64, 56),
    )


def _resnet18_cifar():
    return (("conv1", conv(3, 64, 32, 3)), *_resnet18_stages(64, 32))


# MobileNetV2 inverted residuals: expansion t, output channels c, repeats n, stride s.
MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _mobilenet_v2():
    layers = [("features.0 (stem)", conv(3, 32, 224, 3, stride=2))]
    c, size, index = 32, 112, 1
    for t, width, n, s in MOBILENET_V2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            name = f"features.{index}"
            if t != 1:
                layers.append((f"{name} expand", conv(c, hidden, size, 1)))
            layers.append((f"{name} depthwise",
                           conv(hidden, hidden, size, 3, stride=stride, groups=hidden)))
            size //= stride
            layers.append((f"{name} project", conv(hidden, width, size, 1)))
            c, index = width, index + 1
    layers.append((f"features.{index} (last 1x1)", conv(c, 1280, size, 1)))
    return tuple(layers)


def _unet(d, c_in, size, widths, classes=2):
    """A U-Net with "same" 3x3(x3) convolutions, 2x max-pools and 2x up-convolutions."""
    dims = (size,) * d
    layers, c = [], c_in
    for level, width in enumerate(widths[:-1], 1):
        s = tuple(x >> (level - 1) for x in dims)
        layers += [(f"enc{level}.conv1", conv(c, width, s, 3)),
                   (f"enc{level}.conv2", conv(width, width, s, 3)),
                   (f"pool{level}", pool(width, s))]
        c = width
    bottom = tuple(x >> (len(widths) - 1) for x in dims)
    layers += [("bottleneck.conv1", conv(c, widths[-1], bottom, 3)),
               ("bottleneck.conv2", conv(widths[-1], widths[-1], bottom, 3))]
    c = widths[-1]
    for level in range(len(widths) - 1, 0, -1):
        width = widths[level - 1]
        s = tuple(x >> (level - 1) for x in dims)
        # ConvTranspose c -> width, k2 s2, from s/2 to s: the adjoint of this conv.
        layers += [(f"up{level} (ConvTranspose{d}d {c}->{width} k2 s2, as its adjoint)",
                    conv(width, c, s, 2, stride=2, padding=0)),
                   (f"dec{level}.conv1", conv(2 * width, width, s, 3)),
                   (f"dec{level}.conv2", conv(width, width, s, 3))]
        c = width
    layers.append(("head (1x1)", conv(c, classes, dims, 1)))
    return tuple(layers)


def _wavenet(length=4096, residual=64, skip=128, dilations=10):
    """WaveNet: one-hot mu-law input, gated dilated k=2 convolutions, 1x1 convolutions."""
    layers = [("input (1x1 on one-hot 256)", conv(256, residual, (length,), 1))]
    for i in range(dilations):
        d = 2**i
        layers += [(f"block{i}.dilated (filter+gate, d={d})",
                    conv(residual, 2 * residual, (length,), 2, padding=d, dilation=d)),
                   (f"block{i}.residual (1x1)", conv(residual, residual, (length,), 1)),
                   (f"block{i}.skip (1x1)", conv(residual, skip, (length,), 1))]
    layers += [("post1 (1x1)", conv(skip, skip, (length,), 1)),
               ("post2 (1x1, 256 classes)", conv(skip, 256, (length,), 1))]
    return tuple(layers)


NETWORKS = (
    Network("lenet5", "LeNet-5, 1x32x32", 64, _lenet5()),
    Network("vgg16-cifar", "VGG-16 for CIFAR, 3x32x32", 16, _vgg16_cifar()),
    Network("resnet18-224", "ResNet-18, 3x224x224", 4, _resnet18_224()),
    Network("resnet18-cifar", "ResNet-18 for CIFAR (3x3 stem, no max-pool), 3x32x32", 16,
            _resnet18_cifar()),
    Network("mobilenetv2", "MobileNetV2 (width 1.0), 3x224x224", 4, _mobilenet_v2()),
    Network("unet2d", "2-D U-Net, widths 32-512, 3x128x128", 4,
            _unet(2, 3, 128, (32, 64, 128, 256, 512))),
    Network("unet3d", "3-D U-Net, widths 16-128, 1x32x32x32", 2,
            _unet(3, 1, 32, (16, 32, 64, 128))),
    Network("wavenet", "WaveNet, 10 dilations (1-512), 64 residual channels, length 4096",
            4, _wavenet()),
)
BY_KEY = {net.key: net for net in NETWORKS}


@dataclass(frozen=True)
class ZooLayer:
    """One distinct layer shape.

    Parameters
    ----------
    id : str
        ``<network>/<layer>`` of its first source.
    shape : ConvWorkload or PoolWorkload
        The batch-1 shape.
    train_batch : int
        The training batch of its first source's network.
    sources : tuple of (str, str)
        Every (network key, layer name) with this shape.
    """

    id: str
    shape: object
    train_batch: int
    sources: tuple

    @property
    def networks(self):
        """tuple of str: the keys of the networks that have this layer, in order."""
        return tuple(dict.fromkeys(net for net, _ in self.sources))


def distinct_layers(networks=NETWORKS):
    """Return the distinct layer shapes of `networks` as ZooLayers, in first-seen order."""
    found = {}
    for net in networks:
        for name, shape in net.layers:
            layer = found.get(shape)
            if layer is None:
                found[shape] = ZooLayer(f"{net.key}/{name}", shape, net.train_batch,
                                        ((net.key, name),))
            else:
                found[shape] = replace(layer, sources=layer.sources + ((net.key, name),))
    return tuple(found.values())


LAYERS = distinct_layers()


def workloads(layers=LAYERS):
    """Expand layers to workloads at batch 1 and at their training batch.

    Returns
    -------
    list of (ZooLayer, ConvWorkload or PoolWorkload)
        The workload's name is ``<layer id>@<batch>``.
    """
    return [
        (layer, replace(layer.shape, n=n, name=f"{layer.id}@{n}"))
        for layer in layers
        for n in (1, layer.train_batch)
    ]
