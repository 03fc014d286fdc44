"""Where a training step's time goes when the model is small: ms per step of its parts, and CUDA graphs.

On a GPU, yolov5n at batch 16 and 320 px keeps the device busy a small part of each step: the host, launching
kernels and waiting for them, sets the pace. This prints, per setting (image size and batch), the ms per step
of the loss alone (forward and backward from fixed predictions), of a forward+backward (AMP on CUDA,
channels_last, random images, every layer training), the same with the real loss on synthetic targets, and on
CUDA both again with the model's forward and backward replayed from CUDA graphs
(``torch.cuda.make_graphed_callables``; the loss stays eager), with how far the graphed first step's loss and
gradients are from the eager step's; then one SGD step over the model's parameters with torch's foreach and
fused implementations. Each time is the mean of ``--iters`` steps after three untimed.

    .venv/bin/python benchmarks/step_overhead.py --device 0             # 320/16 and 640/64 on the first GPU
    .venv/bin/python benchmarks/step_overhead.py --sizes 64x4 --iters 50  # the CPU: the loss's host cost
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from yolo_transfer.data.hyps import load_hyp
from yolo_transfer.engine.device import select_device
from yolo_transfer.engine.loss import ComputeLoss, scale_loss_gains
from yolo_transfer.models import load_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_WEIGHTS = SHARED / "weights" / "yolov5n.pt"
WARMUP_STEPS = 3
TARGETS_PER_IMAGE = 6
NUM_CLASSES = 3


class _TupleOutputs(torch.nn.Module):
    """The model with its per-level outputs as a tuple, the form graph capture takes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(images))


def synthetic_targets(batch: int, generator: torch.Generator) -> torch.Tensor:
    """``(N, 6)`` rows [image, class, xc, yc, w, h], normalised, a few per image."""
    n = batch * TARGETS_PER_IMAGE
    return torch.cat(
        (
            torch.randint(0, batch, (n, 1), generator=generator).float(),
            torch.randint(0, NUM_CLASSES, (n, 1), generator=generator).float(),
            torch.rand(n, 2, generator=generator) * 0.8 + 0.1,
            torch.rand(n, 2, generator=generator) * 0.3 + 0.05,
        ),
        1,
    )


def ms_per_step(step: Callable[[], object], device: torch.device, iters: int) -> float:
    for _ in range(WARMUP_STEPS):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _synchronize(device)
    return (time.perf_counter() - start) / iters * 1e3


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(weights: Path, device: torch.device) -> torch.nn.Module:
    model, _ = load_model(weights, nc=NUM_CLASSES)
    return model.to(device).to(memory_format=torch.channels_last).train()


def measure(args: argparse.Namespace, imgsz: int, batch: int, device: torch.device) -> dict[str, str]:
    """One row: the step's variants in ms, the graphed step's differences, the optimizer's two kinds."""
    amp = device.type == "cuda"
    hyp = scale_loss_gains(load_hyp("low"), nl=3, nc=NUM_CLASSES, imgsz=imgsz)
    targets = synthetic_targets(batch, torch.Generator().manual_seed(0)).to(device)
    images = torch.rand(batch, 3, imgsz, imgsz, device=device).contiguous(memory_format=torch.channels_last)
    model = fresh_model(args.weights, device)
    start_state = {name: value.clone() for name, value in model.state_dict().items()}
    compute_loss = ComputeLoss(model, hyp)

    def bare(net: Callable = model) -> None:
        with torch.autocast(device.type, enabled=amp, cache_enabled=False):
            total = sum(out.float().mean() for out in net(images))
        total.backward()

    def with_loss(net: Callable = model) -> torch.Tensor:
        with torch.autocast(device.type, enabled=amp, cache_enabled=False):
            loss, _ = compute_loss(list(net(images)), targets)
        loss.backward()
        return loss.detach()

    with torch.autocast(device.type, enabled=amp, cache_enabled=False):
        predictions = [out.detach().requires_grad_() for out in model(images)]

    def loss_alone() -> None:
        with torch.autocast(device.type, enabled=amp, cache_enabled=False):
            loss, _ = compute_loss(predictions, targets)
        loss.backward()

    row = {"loss+bwd": f"{ms_per_step(loss_alone, device, args.iters):.2f}"}
    row["fwd+bwd"] = f"{ms_per_step(bare, device, args.iters):.2f}"
    row["fwd+loss+bwd"] = f"{ms_per_step(with_loss, device, args.iters):.2f}"
    row |= graphed_steps(model, start_state, images, bare, with_loss, device, args.iters)
    params = list(model.parameters())
    for kind in ("foreach", "fused"):
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.937, nesterov=True, **{kind: True})
        row[f"SGD {kind}"] = f"{ms_per_step(optimizer.step, device, args.iters):.2f}"
    return row


def graphed_steps(
    model: torch.nn.Module,
    start_state: dict[str, torch.Tensor],
    images: torch.Tensor,
    bare: Callable[..., None],
    with_loss: Callable[..., torch.Tensor],
    device: torch.device,
    iters: int,
) -> dict[str, str]:
    """The two steps with the model replayed from CUDA graphs, and the first graphed step's loss and
    gradients against an eager step's from the same weights (on CUDA only)."""
    if device.type != "cuda":
        return {"graphed fwd+bwd": "-", "graphed fwd+loss+bwd": "-", "graphed vs eager": "-"}
    model.load_state_dict(start_state)
    model.zero_grad(set_to_none=True)
    eager_loss = with_loss()
    eager_grads = [param.grad.clone() for param in model.parameters()]
    with torch.autocast("cuda", cache_enabled=False):
        graphed = torch.cuda.make_graphed_callables(_TupleOutputs(model), (images,))
    model.load_state_dict(start_state)  # the capture's warm-up steps moved the BatchNorm statistics
    model.zero_grad(set_to_none=True)
    graphed_loss = with_loss(graphed)
    worst = max(
        ((param.grad - eager).abs().max() / eager.abs().max().clamp(min=1e-12)).item()
        for param, eager in zip(model.parameters(), eager_grads, strict=True)
    )
    loss_difference = ((graphed_loss - eager_loss).abs() / eager_loss.abs()).item()
    return {
        "graphed fwd+bwd": f"{ms_per_step(lambda: bare(graphed), device, iters):.2f}",
        "graphed fwd+loss+bwd": f"{ms_per_step(lambda: with_loss(graphed), device, iters):.2f}",
        "graphed vs eager": f"loss {loss_difference:.1e}, grads {worst:.1e}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="320x16,640x64", help="IMGSZxBATCH settings, comma-separated")
    parser.add_argument("--iters", type=int, default=20, help="timed steps per measurement")
    args = parser.parse_args()
    device = select_device(args.device)
    torch.backends.cudnn.benchmark = True  # as the trainer runs on CUDA
    settings = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    rows = [(imgsz, batch, measure(args, imgsz, batch, device)) for imgsz, batch in settings]
    amp = "on" if device.type == "cuda" else "off"
    table = Table(
        title=f"ms per training step: yolov5n ({args.weights.name}), {device}",
        caption=f"{platform.machine()}, torch {torch.__version__}; AMP {amp}",
    )
    table.add_column("imgsz x batch")
    for column in rows[0][2]:
        table.add_column(column, justify="right")
    for imgsz, batch, row in rows:
        table.add_row(f"{imgsz} x {batch}", *row.values())
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
