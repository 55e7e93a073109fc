"""The peer: airbench94's recipe in PyTorch on the CPU, the run a user would otherwise pick, at its
own best precision: `torch.autocast("cpu", dtype=torch.bfloat16)` where the CPU has bf16 units
(AVX512-BF16 or AMX), else float32 (`--precision` overrides).

Our own port, written from reading KellerJordan/cifar10-airbench `legacy/airbench94.py` (same
network, hyperparameters, alternating flip, 2-pixel translate, lookahead, TTA level 2), with
GPU-only parts (CUDA half precision, CUDA events) replaced by CPU autocast and wall-clock timing.
It must run in a throwaway virtual environment, never in the project's requirements:

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 numpy pillow
    /tmp/peer/bin/python bench/peer_airbench_torch.py --data /tmp/cifar/cifar10-jpeg --epochs 4 --widths 32,128,128

Prints one line per epoch (cumulative training seconds, excluding evaluation) and a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)


def has_bf16_units() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((root / split / name).iterdir()):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last), torch.tensor(labels)


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int, momentum: float = 0.6):
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int = 3, padding="same", bias: bool = False):
        super().__init__(cin, cout, kernel, padding=padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[:w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(cin, cout), nn.MaxPool2d(2), BatchNorm(cout)
        self.conv2, self.norm2, self.act = Conv(cout, cout), BatchNorm(cout), nn.GELU()

    def forward(self, x):
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class Mul(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def make_net(widths: tuple[int, int, int]) -> nn.Sequential:
    net = nn.Sequential(
        Conv(3, 24, 2, padding=0, bias=True), nn.GELU(),
        ConvGroup(24, widths[0]), ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2]),
        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(widths[2], 10, bias=False), Mul(1 / 9))
    net[0].weight.requires_grad = False
    return net.to(memory_format=torch.channels_last)


def init_whitening(layer: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    c, (h, w) = images.shape[1], layer.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
    flat = patches.view(len(patches), -1)
    eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / len(flat), UPLO="U")
    eigenvalues, eigenvectors = eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((scaled, -scaled))


def batch_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    r = (images.size(-1) - size) // 2
    shifts = torch.randint(-r, r + 1, size=(len(images), 2))
    out = torch.empty((len(images), images.size(1), size, size), dtype=images.dtype)
    for sy in range(-r, r + 1):
        for sx in range(-r, r + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[mask] = images[mask, :, r + sy:r + sy + size, r + sx:r + sx + size]
    return out.contiguous(memory_format=torch.channels_last)


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, tta: bool, precision: str) -> float:
    def mirror(inputs):
        return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

    net.eval()
    correct = 0
    with torch.no_grad(), autocast(precision):
        for i in range(0, len(x), 1000):
            inputs = x[i:i + 1000]
            if not tta:
                logits = net(inputs)
            else:
                padded = F.pad(inputs, (1,) * 4, "reflect")
                shifted = [mirror(padded[:, :, 0:32, 0:32]), mirror(padded[:, :, 2:34, 2:34])]
                logits = 0.5 * mirror(inputs) + 0.5 * torch.stack(shifted).mean(0)
            correct += int((logits.float().argmax(1) == y[i:i + 1000]).sum())
    net.train()
    return correct / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="image folder with train/ and test/")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--widths", default="32,128,128")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                    help="auto: bfloat16 autocast where the CPU has bf16 units, else float32")
    ap.add_argument("--throughput-only", action="store_true", help="time 10 steps on random data and exit")
    args = ap.parse_args()
    widths = tuple(int(v) for v in args.widths.split(","))
    precision = args.precision if args.precision != "auto" else "bfloat16" if has_bf16_units() else "float32"
    torch.manual_seed(args.seed)
    print(f"# peer: torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus; widths {widths}, batch {args.batch_size}, epochs {args.epochs}, {precision}", flush=True)
    bs, momentum = args.batch_size, 0.85
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilostep, 0.0153 * bs / kilostep
    net = make_net(widths)
    if args.throughput_only:
        x = torch.randn(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (bs,))
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, nesterov=True)
        for i in range(12):
            if i == 2:
                t0 = time.perf_counter()
            with autocast(precision):
                loss = F.cross_entropy(net(x), y, label_smoothing=0.2, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(json.dumps({"peer_images_per_second": round(10 * bs / (time.perf_counter() - t0), 1),
                          "precision": precision}))
        return
    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "test")
    steps_per_epoch = len(x_train) // bs
    total_steps = math.ceil(steps_per_epoch * args.epochs)
    norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
    opt = torch.optim.SGD([dict(params=norm_biases, lr=lr * 64, weight_decay=wd / (lr * 64)),
                           dict(params=others, lr=lr, weight_decay=wd / lr)], momentum=momentum, nesterov=True)
    warmup = int(total_steps * 0.23)

    def schedule(step: int) -> float:
        if step < warmup:
            return 0.2 + 0.8 * step / warmup
        return 1.0 - 0.93 * (step - warmup) / (total_steps - warmup)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    alpha = 0.95 ** 5 * (torch.arange(total_steps + 1) / total_steps) ** 3
    slow = {k: v.clone() for k, v in net.state_dict().items()}
    train_seconds = 0.0
    t0 = time.perf_counter()
    init_whitening(net[0], x_train[:5000])
    train_seconds += time.perf_counter() - t0
    flipped = torch.where((torch.rand(len(x_train)) < 0.5).view(-1, 1, 1, 1), x_train.flip(-1), x_train)
    padded = F.pad(flipped, (2,) * 4, "reflect")
    step, history = 0, []
    for epoch in range(math.ceil(args.epochs)):
        t0 = time.perf_counter()
        net[0].bias.requires_grad = epoch < 3
        images = batch_crop(padded, 32)
        if epoch % 2 == 1:
            images = images.flip(-1)
        order = torch.randperm(len(images))
        for i in range(steps_per_epoch):
            idx = order[i * bs:(i + 1) * bs]
            with autocast(precision):
                loss = F.cross_entropy(net(images[idx]), y_train[idx], label_smoothing=0.2, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 5 == 0 or step >= total_steps:
                decay = 1.0 if step >= total_steps else float(alpha[step])
                for (k, s), v in zip(slow.items(), net.state_dict().values()):
                    if v.dtype.is_floating_point:
                        s.lerp_(v, 1 - decay)
                        v.copy_(s)
            if step >= total_steps:
                break
        train_seconds += time.perf_counter() - t0
        acc = evaluate(net, x_test, y_test, tta=False, precision=precision)
        history.append({"epoch": epoch + 1, "train_seconds": round(train_seconds, 1), "val_accuracy": acc})
        print(f"epoch {epoch + 1}: train {train_seconds:.0f} s, test accuracy {acc:.4f}", flush=True)
    tta = evaluate(net, x_test, y_test, tta=True, precision=precision)
    print(json.dumps({"peer": "airbench94-torch-cpu", "widths": widths, "epochs": args.epochs, "batch_size": bs,
                      "precision": precision,
                      "train_seconds": round(train_seconds, 1), "test_accuracy": history[-1]["val_accuracy"],
                      "test_accuracy_tta": tta, "history": history}), flush=True)


if __name__ == "__main__":
    main()
