"""Round-robin timing: every model once per round, medians and IQRs over rounds.

Machines that run the benchmarks are shared, and their load swings by 2-3x within
minutes. Timing the models one after the other would hand each model its own load;
timing them in rounds, one call of every job per round (the starting job rotating),
makes a burst hit all of them alike, so their ratios hold even when the times do not.
"""
import contextlib
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

Job = Callable[[], object]  # one call to time: a forward, a training step, ...


class Runner:
    """Device, precision and compile settings shared by every measured call.

    Args:
        device (str): 'cpu', 'cuda', 'cuda:1', ...
        amp (bool): autocast, bf16 on the CPU (its fast half type), fp16 on GPUs.
        compile_model (bool): ``torch.compile`` the models of :meth:`model`.
        seed (int): weights and inputs.
    """

    def __init__(self, device: str = 'cpu', amp: bool = False, compile_model: bool = False,
                 seed: int = 0):
        self.device = torch.device(device)
        self.amp = amp
        self.compile = compile_model
        self.seed = seed

    def model(self, make: Callable[[int], nn.Module], img_size: int, train: bool = False,
              eager: bool = False) -> nn.Module:
        """``make(img_size)`` on the device, in eval (or train) mode, compiled with
        ``compile_model`` unless ``eager``. Seeded: ClusterViG's k-means iterations, hence
        its time, depend on the weights, so they must not depend on what was built
        before."""
        torch.manual_seed(self.seed)
        model = make(img_size).to(self.device)
        model.train(train)  # mmpretrain's Vig.train() returns None: no chaining
        return torch.compile(model) if self.compile and not eager else model

    def inputs(self, batch: int, height: int, width: int) -> Tensor:
        """:math:`(B, 3, H, W)` standard normal images, the same for every model."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn(batch, 3, height, width, generator=gen).to(self.device)

    def sync(self):
        # CUDA kernels run asynchronously: without it a timer sees only the launches.
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == 'cuda' else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, model: nn.Module, x: Tensor, **kwargs):
        """One inference forward (``torch.inference_mode``)."""
        with torch.inference_mode(), self.autocast():
            return model(x, **kwargs)

    def train_step(self, model: nn.Module, x: Tensor) -> float:
        """Forward and backward of a backbone in train mode; returns the loss.

        The loss is the sum of the means of all outputs, so every output level gets a
        gradient, as under a detector's neck and heads (which are not part of the cost).
        Gradients are freed afterwards: the next model starts from the same memory.
        """
        with self.autocast():
            outs = model(x)
            loss = sum(out.float().mean() for out in outs)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    def timed(self, job: Job) -> float:
        """Seconds of one call of ``job``."""
        self.sync()
        start = time.perf_counter()
        job()
        self.sync()
        return time.perf_counter() - start


def round_robin(runner: Runner, jobs: Dict[str, Job], warmup: int = 2,
                repeats: int = 5) -> Dict[str, List[float]]:
    """Time every job ``repeats`` times, in rounds of one call of each.

    ``warmup`` untimed rounds come first: first calls pay for allocator growth, oneDNN
    primitive creation and (compiled) compilation for every new shape. The starting job
    rotates from round to round, so no job always runs right after the same other one.

    Returns:
        dict: seconds of every call, per job name.
    """
    warm_up(jobs, warmup)
    names = list(jobs)
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(runner.timed(jobs[name]))
    return times


def warm_up(jobs: Dict[str, Job], rounds: int):
    """Call every job ``rounds`` times, untimed."""
    for _ in range(rounds):
        for name, job in jobs.items():
            try:
                job()
            except RuntimeError as err:  # name the model: the traceback shows a partial
                raise RuntimeError(f'{name} failed: {err}') from err


def summarize(times: Sequence[float]) -> dict:
    """Median, quartiles and range of a list of seconds."""
    arr = np.asarray(times, dtype=float)
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return dict(median_s=float(median), q1_s=float(q1), q3_s=float(q3),
                min_s=float(arr.min()), max_s=float(arr.max()), repeats=len(arr))


def paired_ratio(slow: Sequence[float], fast: Sequence[float]) -> dict:
    """How many times ``fast`` is faster than ``slow``: the ratio of the medians, and the
    median and IQR of the per-round ratios (both ran in the same round, same load)."""
    per_round = np.asarray(slow, dtype=float) / np.asarray(fast, dtype=float)
    q1, median, q3 = np.percentile(per_round, [25, 50, 75])
    return dict(ratio_of_medians=float(np.median(slow) / np.median(fast)),
                paired_median=float(median), paired_q1=float(q1), paired_q3=float(q3))
