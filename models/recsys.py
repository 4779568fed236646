"""Matrix factorization for MovieLens: a rating predictor (BiasedMF) and an implicit ranker (BPRMF).

Both keep one embedding per user and per item. A visitor who is not one of the training users is
"folded in": their vector is the closed-form ridge-regression solution against the frozen item
embeddings, so a new user costs one small linear solve and no retraining.

The config also carries the movies' titles, years and genres (metadata, not ratings) so the app can
show results on a fresh clone, and the buffers ``seen_indptr`` / ``seen_items`` hold, in CSR form, the
ids of the movies each training user rated (no rating values), for the "hide what I have seen" filter.
"""
# No `from __future__ import annotations`: PyTorchModelHubMixin reads the real `config` annotation.
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn


@dataclass
class RecConfig:
    n_users: int = 943
    n_items: int = 1682
    dim: int = 64
    init_std: float = 0.1
    global_mean: float = 3.5          # BiasedMF: mean training rating
    implicit: bool = False            # BiasedMF: add SVD++'s implicit term |N(u)|^-1/2 sum_{j in N(u)} y_j
    fold_lambda: float = 1.0          # ridge strength of the new-user fold-in
    fold_alpha: float = 0.05          # BPRMF fold-in: weight of the unobserved items (implicit ALS)
    fold_target: float = 1.0          # BPRMF fold-in: regression target for a liked movie
    n_seen: int = 0                   # length of the seen_items buffer
    titles: list = field(default_factory=list)
    years: list = field(default_factory=list)
    genres: list = field(default_factory=list)  # one "Action, Comedy" string per movie
    recipe: dict = field(default_factory=dict)  # training hyper-parameters, so `evaluate` can retrain


class _Factorization(nn.Module):
    def __init__(self, config: RecConfig) -> None:
        super().__init__()
        self.config = config
        self.user_emb = nn.Embedding(config.n_users, config.dim)
        self.item_emb = nn.Embedding(config.n_items, config.dim)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        # 1-d parameters: the shared loop's optimizer never weight-decays them.
        self.user_bias = nn.Parameter(torch.zeros(config.n_users))
        self.item_bias = nn.Parameter(torch.zeros(config.n_items))
        self.register_buffer("seen_indptr", torch.zeros(config.n_users + 1, dtype=torch.int32))
        self.register_buffer("seen_items", torch.zeros(config.n_seen, dtype=torch.int32))

    # -- seen items (CSR) ---------------------------------------------------------------------
    def set_seen(self, lists: list) -> None:
        """Store each user's rated item ids; resizes the buffers and ``config.n_seen``."""
        counts = torch.tensor([len(s) for s in lists], dtype=torch.int64)
        self.seen_indptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).int()
        self.seen_items = torch.cat([torch.as_tensor(s, dtype=torch.int32) for s in lists]) \
            if lists else torch.zeros(0, dtype=torch.int32)
        self.config.n_seen = int(self.seen_items.numel())

    def seen(self, user: int) -> torch.Tensor:
        lo, hi = int(self.seen_indptr[user]), int(self.seen_indptr[user + 1])
        return self.seen_items[lo:hi].long()

    # -- scoring -------------------------------------------------------------------------------
    def user_scores(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) user ids -> (B, n_items) scores for every item."""
        return self.scores_for(self.user_emb(users), self.user_bias[users])

    def scores_for(self, vectors: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def similar_items(self, item: int, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` items whose embeddings have the highest cosine similarity to ``item`` (itself excluded)."""
        q = F.normalize(self.item_emb.weight, dim=1)
        sim = q @ q[item]
        sim[item] = -2.0
        top = sim.topk(min(k, sim.numel() - 1))
        return top.indices, top.values

    def item_similarity(self, items: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix between two sets of items, (len(items), len(others))."""
        q = F.normalize(self.item_emb.weight, dim=1)
        return q[items] @ q[others].T


class BiasedMF(_Factorization, PyTorchModelHubMixin, library_name="pytorch", tags=["recommender"]):
    """r_hat(u, i) = mu + b_u + b_i + p_u . q_i  (Koren, Bell & Volinsky 2009).

    With ``config.implicit`` the user factor is p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j, N(u) being the
    movies the user rated (SVD++, Koren 2008): which movies someone chose to rate says something too.
    N(u) is the seen-items buffer, so ``set_seen`` must hold the training data before training.
    """

    def __init__(self, config: RecConfig) -> None:
        super().__init__(config)
        if config.implicit:
            self.implicit_emb = nn.Embedding(config.n_items, config.dim)
            nn.init.zeros_(self.implicit_emb.weight)

    def implicit_vectors(self) -> torch.Tensor:
        """(n_users, dim): |N(u)|^-1/2 sum_{j in N(u)} y_j for every training user."""
        counts = self.seen_indptr.diff().long()
        weights = counts.clamp_min(1).float().rsqrt().repeat_interleave(counts)
        return F.embedding_bag(self.seen_items.long(), self.implicit_emb.weight, self.seen_indptr[:-1].long(),
                               mode="sum", per_sample_weights=weights)

    def user_vectors(self, users: torch.Tensor, implicit: Optional[torch.Tensor] = None) -> torch.Tensor:
        p = self.user_emb(users)
        if self.config.implicit:
            p = p + (self.implicit_vectors() if implicit is None else implicit)[users]
        return p

    def forward(self, users: torch.Tensor, items: torch.Tensor,
                implicit: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (self.config.global_mean + self.user_bias[users] + self.item_bias[items]
                + (self.user_vectors(users, implicit) * self.item_emb(items)).sum(-1))

    def user_scores(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores_for(self.user_vectors(users), self.user_bias[users])

    def scores_for(self, vectors: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        return (self.config.global_mean + biases[:, None] + self.item_bias[None, :]
                + vectors @ self.item_emb.weight.T)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, ratings: torch.Tensor,
                lam: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve a new user's (bias, vector) from their ratings against the frozen items.

        min_x sum_i (r_i - mu - b_i - q_i . z - [1, q_i] . x)^2 + lam |x|^2, so
        x = (X^T X + lam I)^-1 X^T y with X = [1, q_i] and y = r_i - mu - b_i - q_i . z, where z is the
        implicit term of the rated items (0 without ``config.implicit``). Returns (b_u, p_u + z).
        """
        lam = self.config.fold_lambda if lam is None else lam
        items = torch.as_tensor(items, dtype=torch.long)
        ratings = torch.as_tensor(ratings, dtype=torch.float32)
        q = self.item_emb.weight[items].float()
        z = torch.zeros(q.shape[1])
        if self.config.implicit:
            z = self.implicit_emb.weight[items].float().sum(0) / max(len(items), 1) ** 0.5
        X = torch.cat([torch.ones(len(items), 1), q], dim=1)
        y = ratings - self.config.global_mean - self.item_bias[items].float() - q @ z
        A = X.T @ X + lam * torch.eye(X.shape[1])
        x = torch.linalg.solve(A, X.T @ y)
        return x[0], x[1:] + z


class BPRMF(_Factorization, PyTorchModelHubMixin, library_name="pytorch", tags=["recommender"]):
    """x(u, i) = p_u . q_i + b_i, trained to rank a user's items above the rest (Rendle et al. 2009).

    ``user_bias`` exists for a uniform interface but is unused: it cannot change a user's ranking.
    """

    def __init__(self, config: RecConfig) -> None:
        super().__init__(config)
        self._gram: Optional[torch.Tensor] = None

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_emb(users) * self.item_emb(items)).sum(-1) + self.item_bias[items]

    def scores_for(self, vectors: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
        return vectors @ self.item_emb.weight.T + self.item_bias[None, :]

    def train(self, mode: bool = True) -> "BPRMF":
        self._gram = None  # item embeddings may change: drop the cached Q^T Q
        return super().train(mode)

    @torch.no_grad()
    def fold_in(self, items: torch.Tensor, alpha: Optional[float] = None, lam: Optional[float] = None,
                target: Optional[float] = None) -> torch.Tensor:
        """Solve a new user's vector from a set of liked items (implicit-feedback ridge regression).

        min_u sum_{i liked} (t - q_i . u)^2 + alpha sum_{j not liked} (q_j . u)^2 + lam |u|^2
        => (alpha Q^T Q + (1 - alpha) Q_L^T Q_L + lam I) u = t Q_L^T 1   (Hu, Koren & Volinsky 2008).
        """
        c = self.config
        alpha = c.fold_alpha if alpha is None else alpha
        lam = c.fold_lambda if lam is None else lam
        target = c.fold_target if target is None else target
        Q = self.item_emb.weight.float()
        if self._gram is None or self.training:
            self._gram = Q.T @ Q
        q = Q[torch.as_tensor(items, dtype=torch.long)]
        A = alpha * self._gram + (1 - alpha) * q.T @ q + lam * torch.eye(Q.shape[1])
        return torch.linalg.solve(A, target * q.sum(0))
