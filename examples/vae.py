"""The seeds' VAE on 32x32 images, normalised to [-1, 1] with torchvision's transforms,
fed by lancefeed.DataLoader; writes grids of inputs and reconstructions as PNG.

    python examples/vae.py [--train 10000] [--epochs 2] [--out /tmp/lancefeed-examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import transforms
from torchvision.utils import make_grid, save_image

sys.path.insert(0, str(Path(__file__).parent))
from common import dataset  # noqa: E402

import lancefeed  # noqa: E402

transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


class VAE(nn.Module):
    def __init__(self, latent: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
        )
        self.mu = nn.Linear(64 * 8 * 8, latent)
        self.logvar = nn.Linear(64 * 8 * 8, latent)
        self.decoder_in = nn.Linear(latent, 64 * 8 * 8)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(self.decoder_in(z).view(-1, 64, 8, 8)), mu, logvar


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path("/tmp/lancefeed-examples"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    loader = lancefeed.DataLoader(dataset(args.out, "train", args.train), args.batch_size, shuffle=True,
                                  transform=transform, label_column=None)
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        total = seen = 0.0
        for (images,) in loader:
            recon, mu, logvar = model(images)
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(images)
            loss = F.mse_loss(recon, images, reduction="sum") / len(images) + kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(images)
            seen += len(images)
        print(f"epoch {epoch + 1}: loss {total / seen:.2f}")
    model.eval()
    with torch.no_grad():
        (images,) = next(iter(loader))
        recon, _, _ = model(images[:32])
    grid = make_grid(torch.cat([images[:32], recon]) * 0.5 + 0.5, nrow=8)  # back to [0, 1]
    path = args.out / "vae-inputs-and-reconstructions.png"
    save_image(grid, path)
    print(f"wrote {path} (top: inputs, bottom: reconstructions)")
    return path


if __name__ == "__main__":
    main()
