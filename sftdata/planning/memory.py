"""What a probe step costs in memory, measured on the device it will train on.

Why separate meters: on CUDA the allocator knows its own peak (``torch.cuda.max_memory_allocated``,
reset per trial) and how much of the device is this process's to use (``torch.cuda.mem_get_info``
plus what PyTorch already reserved). On CPU there is no allocator to ask, so the meter reads the
process's peak resident set (``VmHWM``), which Linux resets on request (``/proc/self/clear_refs``),
and the budget is what the user says the process may have (``--memory-limit``). Either way the
probe keeps a safety margin (10 % of the device's memory by default) below the budget.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sftdata.errors import TrainError

DEFAULT_MARGIN = 0.10
_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


class MemoryMeter(Protocol):
    """A device's memory as the probe sees it; sizes in bytes."""

    name: str

    def total(self) -> int: ...  # the device's memory (the margin is a share of it)

    def budget(self) -> int: ...  # what this process may use at its peak

    def reset(self) -> None: ...  # release what can be released and restart the peak count

    def peak(self) -> int: ...  # the peak since the last reset


def _rss_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise TrainError(f"cannot read {field} from {_STATUS}")
    return int(match.group(1))


@dataclass
class CpuMeter:
    """The process's peak resident memory against ``limit`` bytes (``--memory-limit``)."""

    limit: int
    name: str = "cpu"

    def __post_init__(self) -> None:
        if not _STATUS.is_file():
            raise TrainError("measuring CPU memory needs Linux /proc/self/status; give --batch-size N instead of auto")

    def total(self) -> int:
        return self.limit

    def budget(self) -> int:
        return self.limit

    def reset(self) -> None:
        gc.collect()
        try:
            _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS (Linux >= 4.0)
        except OSError as exc:
            raise TrainError(f"cannot reset the peak memory counter ({exc}); give --batch-size N instead") from exc

    def peak(self) -> int:
        return _rss_kib("VmHWM") * 1024

    def current(self) -> int:
        return _rss_kib("VmRSS") * 1024


@dataclass
class CudaMeter:
    """PyTorch's caching allocator on one CUDA device. Not run by the test suite (no GPU there)."""

    device: object
    name: str = "cuda"

    def __post_init__(self) -> None:
        import torch

        self.name = f"{self.device} ({torch.cuda.get_device_name(self.device)})"

    def total(self) -> int:
        import torch

        return int(torch.cuda.mem_get_info(self.device)[1])

    def budget(self) -> int:
        import torch

        free, _ = torch.cuda.mem_get_info(self.device)  # other processes' use and the CUDA context stay out
        return int(free + torch.cuda.memory_reserved(self.device))

    def reset(self) -> None:
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        import torch

        return int(torch.cuda.max_memory_allocated(self.device))


def meter_for(device: object, memory_limit: int | None) -> MemoryMeter:
    """The meter for ``device`` (a ``torch.device``); CPU needs ``memory_limit``."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return CudaMeter(device)
    if kind == "cpu":
        if memory_limit is None:
            raise TrainError("on CPU, auto batch sizing needs --memory-limit (e.g. 24GiB): the memory the "
                             "training process may use")
        return CpuMeter(memory_limit)
    raise TrainError(f"auto batch sizing measures memory on cuda and cpu only, not on {kind}; give a fixed size")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the allocator's out-of-memory errors (CUDA's, and the CPU allocator's RuntimeError)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"
