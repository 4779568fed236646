"""The models: pure ``nn.Module``s and samplers (no file or network I/O, no Gradio)."""
from __future__ import annotations

import torch


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Normal noise drawn with ``generator`` on the generator's own device, then moved to ``device``: a CPU
    generator (the seeded default everywhere here) then also drives a model on a GPU, with the same samples."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)
