"""Sample figures: one row per fixed test image, the input left, the reconstruction right."""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from models.data import ImageSet, normalize, to_float

# The same test images for every model of a dataset, so figures compare side by side.
SAMPLE_INDICES = (1, 2, 3, 4)


@torch.no_grad()
def sample_grid(model: nn.Module, images: ImageSet, *, indices: Sequence[int] = SAMPLE_INDICES,
                device: torch.device | str = "cpu", scale: int = 4) -> bytes:
    """PNG bytes of a len(indices) × 2 grid (input, reconstruction), upscaled ``scale``×."""
    indices = [i for i in indices if i < len(images)]
    if not indices:
        raise ValueError("no sample index falls inside the image set")
    model.eval()
    x = to_float(images.images[torch.tensor(indices)], device=device)
    out = model(normalize(x)).float().clamp(0.0, 1.0)
    pairs = torch.stack([x, out], dim=1).flatten(0, 1)  # input, output, input, output…
    grid = make_grid(pairs.cpu(), nrow=2, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(array)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
