"""Generative models for 28x28 grayscale images (Fashion-MNIST): a convolutional VAE and a class-conditional
DCGAN. Images are floats in [0, 1], shape (B, 1, 28, 28). Pure modules, no I/O.

VAE: Gaussian encoder q(z|x) = N(mu, diag(sigma^2)), standard-normal prior, Bernoulli decoder p(x|z) whose
logits the decoder outputs; the loss is the beta-weighted negative ELBO (Kingma & Welling 2014, Higgins et
al. 2017). DCGAN: transposed-conv generator, strided-conv discriminator with spectral norm and a projection
class head (Miyato & Koyama 2018), non-saturating loss (Goodfellow et al. 2014).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models import randn

IMAGE_SIZE = 28


# --------------------------------------------------------------------------- VAE

@dataclass
class VAEConfig:
    latent_dim: int = 16
    beta: float = 1.0       # weight of the KL term in the training loss (1: the plain ELBO)
    width: int = 32         # channels of the first conv; doubled once
    hidden: int = 256       # fully connected layer between the conv stack and the latent


@dataclass
class ELBO:
    """Per-image averages, in nats. ``loss`` is what training minimizes: recon + beta * kl."""
    loss: torch.Tensor
    recon: torch.Tensor     # -E_q[log p(x|z)], one sample of z
    kl: torch.Tensor        # KL(q(z|x) || N(0, I)), closed form

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.recon + self.kl


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over the latent dimensions: one value per row."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | logits) summed over pixels, one value per image. For grey values x in (0, 1) this is the
    binary cross-entropy (the usual continuous relaxation of the Bernoulli likelihood)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)


class VAE(nn.Module, PyTorchModelHubMixin):
    def __init__(self, config: VAEConfig):
        super().__init__()
        if isinstance(config, dict):
            config = VAEConfig(**config)
        if config.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {config.latent_dim}")
        self.config = config
        w, h = config.width, config.hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.SiLU(),            # 28 -> 14
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),        # 14 -> 7
            nn.Flatten(), nn.Linear(2 * w * 49, h), nn.SiLU(),
            nn.Linear(h, 2 * config.latent_dim))           # mu and log-variance
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, h), nn.SiLU(),
            nn.Linear(h, 2 * w * 49), nn.SiLU(), nn.Unflatten(1, (2 * w, 7, 7)),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.SiLU(),  # 7 -> 14
            nn.ConvTranspose2d(w, 1, 4, 2, 1))                 # 14 -> 28, Bernoulli logits

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (B, latent_dim)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-30, 20)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image (Bernoulli means, in [0, 1]) for latents z."""
        return torch.sigmoid(self.decoder(z))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): a sample that gradients flow through to mu and sigma."""
        eps = randn(mu.shape, generator, mu.device, mu.dtype)
        return mu + (0.5 * logvar).exp() * eps

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction logits, mu, logvar) with one reparameterized sample."""
        mu, logvar = self.encode(x)
        return self.decode_logits(self.reparameterize(mu, logvar, generator)), mu, logvar

    def elbo(self, x: torch.Tensor, beta: float | None = None, generator: torch.Generator | None = None) -> ELBO:
        logits, mu, logvar = self(x, generator)
        recon, kl = bernoulli_nll(logits, x).mean(), gaussian_kl(mu, logvar).mean()
        beta = self.config.beta if beta is None else beta
        return ELBO(loss=recon + beta * kl, recon=recon, kl=kl)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the posterior mean: the deterministic reconstruction shown in the tab."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = randn((n, self.latent_dim), generator, self.decoder[0].weight.device)
        return self.decode(z)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, samples: int = 64, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """Importance-weighted estimate of log p(x) per image (Burda et al. 2016), a tighter bound than the
        ELBO: log mean_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x)."""
        mu, logvar = self.encode(x)
        std = (0.5 * logvar).exp()
        out = []
        for _ in range(samples):
            eps = randn(mu.shape, generator, mu.device)
            z = mu + std * eps
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(-1)
            out.append(-bernoulli_nll(self.decode_logits(z), x) + log_pz - log_qz)
        return torch.logsumexp(torch.stack(out), 0) - math.log(samples)


# --------------------------------------------------------------------------- DCGAN

@dataclass
class DCGANConfig:
    noise_dim: int = 64
    num_classes: int = 10   # 0: unconditional
    embed_dim: int = 16     # generator's class embedding, concatenated to the noise
    g_width: int = 64       # generator channels at 14x14 (twice that at 7x7)
    d_width: int = 32       # discriminator channels at 14x14 (twice that at 7x7)


class Generator(nn.Module):
    """[z, class embedding] -> 7x7 feature map -> two stride-2 transposed convs -> 28x28 in [0, 1]."""

    def __init__(self, c: DCGANConfig):
        super().__init__()
        w = c.g_width
        self.embed = nn.Embedding(c.num_classes, c.embed_dim) if c.num_classes else None
        n_in = c.noise_dim + (c.embed_dim if c.num_classes else 0)
        self.fc = nn.Sequential(nn.Linear(n_in, 2 * w * 49, bias=False), nn.BatchNorm1d(2 * w * 49),
                                nn.ReLU(True), nn.Unflatten(1, (2 * w, 7, 7)))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),  # 7 -> 14
            nn.ConvTranspose2d(w, w // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(w // 2), nn.ReLU(True),  # 14 -> 28
            nn.Conv2d(w // 2, 1, 3, 1, 1))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.generate(z, self.embed(y) if self.embed is not None else None)

    def generate(self, z: torch.Tensor, class_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Images from noise and an explicit class embedding (so two classes can be blended)."""
        if self.embed is not None:
            if class_embedding is None:
                raise ValueError("this generator is class-conditional: give class labels or embeddings")
            z = torch.cat([z, class_embedding], dim=-1)
        return torch.sigmoid(self.net(self.fc(z)))


class Discriminator(nn.Module):
    """Strided convs with spectral norm (keeps D 1-Lipschitz-ish: the stabilizer that makes plain Adam work),
    LeakyReLU, and a projection head: logit = psi(h) + <embed(y), h>."""

    def __init__(self, c: DCGANConfig):
        super().__init__()
        w = c.d_width
        self.features = nn.Sequential(
            spectral_norm(nn.Conv2d(1, w, 4, 2, 1)), nn.LeakyReLU(0.2, True),          # 28 -> 14
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2, True),      # 14 -> 7
            spectral_norm(nn.Conv2d(2 * w, 2 * w, 3, 1, 1)), nn.LeakyReLU(0.2, True),
            nn.Flatten())
        self.linear = spectral_norm(nn.Linear(2 * w * 49, 1))
        self.embed = spectral_norm(nn.Embedding(c.num_classes, 2 * w * 49)) if c.num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x * 2 - 1)
        out = self.linear(h).squeeze(-1)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(-1)
        return out


class DCGAN(nn.Module, PyTorchModelHubMixin):
    """Generator and discriminator in one module (the discriminator is kept so training can resume from the
    released weights; sampling needs only the generator)."""

    def __init__(self, config: DCGANConfig):
        super().__init__()
        if isinstance(config, dict):
            config = DCGANConfig(**config)
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return randn((n, self.config.noise_dim), generator, self.generator.fc[0].weight.device)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, y)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """n images; ``labels`` (n,) class ids for the conditional model (default: 0..9 cycled)."""
        if self.conditional and labels is None:
            labels = torch.arange(n) % self.config.num_classes
        return self(self.noise(n, generator), labels)


def gan_losses(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator loss -log D(x) - log(1 - D(G(z))) and the non-saturating generator loss -log D(G(z)),
    from logits (softplus(-l) = -log sigmoid(l))."""
    d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    g_loss = F.softplus(-d_fake).mean()
    return d_loss, g_loss


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent vectors a and b (D,) at fractions t (T,) -> (T, D); the
    path stays at the typical radius of a Gaussian, where linear interpolation would pass near the origin."""
    t = t.view(-1, 1)
    an, bn = a / a.norm().clamp_min(1e-8), b / b.norm().clamp_min(1e-8)
    omega = torch.acos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
