"""Noise schedules and samplers for the diffusion models, kept apart from the network (as diffusers does):
``set_timesteps(n)`` picks the steps, ``step(eps, t, x_t)`` returns x_{t_prev} and the current x_0 guess.

Forward process (Ho et al. 2020): q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), abar_t = prod(1 - beta_s).
DDPM: ancestral sampling with the posterior q(x_prev | x_t, x_0) (variance beta~_t). With n < T steps the
process is respaced (Nichol & Dhariwal 2021): beta'_t = 1 - abar_t / abar_prev.
DDIM (Song et al. 2021): x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)); eta=1 recovers DDPM's variance.
Classifier-free guidance: eps = eps_uncond + w (eps_cond - eps_uncond), both from one batched forward.
The network predicts either eps or v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022). With eps,
x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) divides the network's error by sqrt(abar), which the cosine
schedule takes to 5e-5 at t = T - 1; with v, x_0 = sqrt(abar) x_t - sqrt(1 - abar) v never amplifies it.
"""
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from models import randn


def make_betas(schedule: str, num_train_timesteps: int) -> torch.Tensor:
    """float64 betas: ``linear`` (DDPM's 1e-4..0.02, rescaled to T) or ``cosine`` (Nichol & Dhariwal)."""
    T = num_train_timesteps
    if schedule == "linear":
        scale = 1000 / T
        return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)
    if schedule == "cosine":
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {schedule!r}: use linear or cosine")


@dataclass
class StepOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class NoiseSchedule:
    """The forward process and the shared bookkeeping of the samplers."""

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "cosine", clip_sample: bool = True,
                 prediction_type: str = "epsilon"):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unknown prediction type {prediction_type!r}: use epsilon or v_prediction")
        self.num_train_timesteps, self.beta_schedule, self.clip_sample = num_train_timesteps, beta_schedule, clip_sample
        self.prediction_type = prediction_type
        self.betas = make_betas(beta_schedule, num_train_timesteps)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)
        self.set_timesteps(num_train_timesteps)

    @classmethod
    def from_config(cls, config) -> "NoiseSchedule":
        """The schedule a ``UNetConfig`` says the model was trained with."""
        return cls(config.num_train_timesteps, config.beta_schedule,
                   prediction_type=getattr(config, "prediction_type", "epsilon"))

    def set_timesteps(self, num_inference_steps: int) -> None:
        """``num_inference_steps`` timesteps from T-1 down to 0, evenly spaced (both ends included)."""
        n = int(num_inference_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"steps must be between 1 and {self.num_train_timesteps}, got {n}")
        ts = torch.linspace(self.num_train_timesteps - 1, 0, n).round().long() if n > 1 else \
            torch.tensor([self.num_train_timesteps - 1])
        self.timesteps = torch.unique_consecutive(ts)
        self.num_inference_steps = len(self.timesteps)

    def prev_timestep(self, t: int) -> int:
        i = (self.timesteps == t).nonzero()
        if len(i) == 0:
            raise ValueError(f"timestep {t} is not one of the {self.num_inference_steps} set by set_timesteps")
        i = int(i[0])
        return int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1

    def abar(self, t: int | torch.Tensor) -> torch.Tensor:
        """alpha-bar at t (1 at t = -1, the clean image)."""
        t = torch.as_tensor(t).cpu()  # the table stays on the CPU; _bcast moves values to the data's device
        return torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=torch.float64))

    def _bcast(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        v = v.to(like.device, like.dtype)
        return v.view(-1, *([1] * (like.ndim - 1))) if v.ndim else v

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A sample of q(x_t | x_0) for per-example timesteps ``t``."""
        a = self.abar(t)
        return self._bcast(a.sqrt(), x0) * x0 + self._bcast((1 - a).sqrt(), x0) * noise

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        a = self.abar(t)
        return (x_t - self._bcast((1 - a).sqrt(), x_t) * eps) / self._bcast(a.sqrt(), x_t)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output for x_t = add_noise(x0, noise, t): eps, or v."""
        if self.prediction_type == "epsilon":
            return noise
        a = self.abar(t)
        return self._bcast(a.sqrt(), x0) * noise - self._bcast((1 - a).sqrt(), x0) * x0

    def _x0_and_eps(self, output: torch.Tensor, t: int, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The x_0 guess and the noise estimate from the network's output (eps or v)."""
        a = self.abar(t)
        ca, cs = a.sqrt().to(x_t.dtype), (1 - a).sqrt().to(x_t.dtype)
        if self.prediction_type == "v_prediction":
            x0, eps = ca * x_t - cs * output, cs * x_t + ca * output
        else:
            x0, eps = (x_t - cs * output) / ca, output
        if self.clip_sample:  # keep the x_0 guess in the data range; eps made consistent with it
            x0 = x0.clamp(-1, 1)
            eps = (x_t - ca * x0) / cs
        return x0, eps

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None, **kwargs) -> StepOutput:
        raise NotImplementedError


class DDPMScheduler(NoiseSchedule):
    """Ancestral sampling with the true posterior's variance (on a respaced process when n < T)."""

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t_prev} | x_t, x_0)."""
        a_t, a_prev = self.abar(t), self.abar(t_prev)
        beta = 1 - a_t / a_prev              # the respaced beta (the original one when t_prev = t - 1)
        var = beta * (1 - a_prev) / (1 - a_t)
        c0 = a_prev.sqrt() * beta / (1 - a_t)
        ct = (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)
        return c0.to(x0.dtype) * x0 + ct.to(x0.dtype) * x_t, var.to(x0.dtype)

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None, **kwargs) -> StepOutput:
        t = int(timestep)
        t_prev = self.prev_timestep(t)
        x0, _ = self._x0_and_eps(model_output, t, sample)
        mean, var = self.posterior(x0, sample, t, t_prev)
        if t_prev >= 0:
            noise = randn(sample.shape, generator, sample.device, sample.dtype)
            mean = mean + var.sqrt() * noise
        return StepOutput(mean, x0)


class DDIMScheduler(NoiseSchedule):
    """Deterministic (eta = 0) to fully stochastic (eta = 1) non-Markovian sampling on any step subset."""

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None, eta: float = 0.0, **kwargs) -> StepOutput:
        t = int(timestep)
        t_prev = self.prev_timestep(t)
        x0, eps = self._x0_and_eps(model_output, t, sample)
        a_t, a_prev = self.abar(t), self.abar(t_prev)
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        direction = (1 - a_prev - sigma ** 2).clamp(min=0).sqrt()
        prev = a_prev.sqrt().to(sample.dtype) * x0 + direction.to(sample.dtype) * eps
        if eta > 0 and t_prev >= 0:
            noise = randn(sample.shape, generator, sample.device, sample.dtype)
            prev = prev + sigma.to(sample.dtype) * noise
        return StepOutput(prev, x0)


SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def make_scheduler(kind: str, config, steps: int) -> NoiseSchedule:
    """A ``ddpm`` or ``ddim`` scheduler for a model's config, set to ``steps`` steps."""
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown sampler {kind!r}: use {' or '.join(SCHEDULERS)}")
    scheduler = SCHEDULERS[kind].from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler


def guided_eps(model: nn.Module, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance: float,
               null_class: int) -> torch.Tensor:
    """Classifier-free guided noise estimate: eps_u + w (eps_c - eps_u), one forward on a doubled batch.
    w = 1 is the plain conditional model, w = 0 the unconditional one; ``labels=None`` is unconditional."""
    tt = torch.full((len(x),), t, dtype=torch.long, device=x.device)
    null = torch.full_like(tt, null_class)
    labels = labels.to(x.device) if labels is not None else None
    if labels is None or guidance == 0:
        return model(x, tt, null)
    if guidance == 1:
        return model(x, tt, labels)
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null])).chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


@dataclass
class SampleStep:
    index: int            # 0-based step number
    timestep: int
    x_t: torch.Tensor     # the sample after this step (x_{t_prev})
    x0: torch.Tensor      # the model's guess of the clean image at this step


@torch.no_grad()
def sample_steps(model: nn.Module, scheduler: NoiseSchedule, labels: torch.Tensor | None, *, shape: tuple[int, ...],
                 guidance: float = 1.0, eta: float = 0.0, generator: torch.Generator | None = None,
                 null_class: int | None = None, noise: torch.Tensor | None = None) -> Iterator[SampleStep]:
    """Run the sampler from pure noise, yielding every step; the last ``x_t`` is the sample in [-1, 1]."""
    null_class = model.config.num_classes if null_class is None else null_class
    device = next(model.parameters()).device
    x = noise.to(device) if noise is not None else randn(shape, generator, device)
    for i, t in enumerate(scheduler.timesteps.tolist()):
        eps = guided_eps(model, x, t, labels, guidance, null_class)
        out = scheduler.step(eps, t, x, generator=generator, eta=eta)
        x = out.prev_sample
        yield SampleStep(i, t, x, out.pred_original_sample)


def sample(model: nn.Module, scheduler: NoiseSchedule, labels: torch.Tensor | None, *, shape: tuple[int, ...],
           guidance: float = 1.0, eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Final samples only (clamped to [-1, 1])."""
    last = None
    for last in sample_steps(model, scheduler, labels, shape=shape, guidance=guidance, eta=eta, generator=generator):
        pass
    return last.x_t.clamp(-1, 1)
