"""Top-k ranking metrics as Microsoft ``recommenders`` computes them (binary relevance), so numbers compare
with its MovieLens-100K benchmark table.

For each user with at least one relevant (held-out) item, given the ranked top-k list:
- precision@k = hits / k,  recall@k = hits / |relevant|
- nDCG@k = sum_{hits at rank r} 1/log2(r + 1)  /  sum_{r=1}^{min(|relevant|, k)} 1/log2(r + 1)
- MAP (the benchmark's ``map_at_k``) = sum_{hits at rank r} (hits so far / r)  /  |relevant|
All four are averaged over those users.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def user_metrics(ranked: Sequence[int], relevant: set[int], k: int = 10) -> dict[str, float]:
    top = list(ranked)[:k]
    hits = np.array([item in relevant for item in top], dtype=bool)
    ranks = np.flatnonzero(hits) + 1
    n_rel = len(relevant)
    dcg = float((1.0 / np.log2(ranks + 1)).sum())
    idcg = float((1.0 / np.log2(np.arange(1, min(n_rel, k) + 1) + 1)).sum())
    return {"map": float((np.arange(1, len(ranks) + 1) / ranks).sum() / n_rel),
            "ndcg": dcg / idcg,
            "precision": len(ranks) / k,
            "recall": len(ranks) / n_rel}


def ranking_metrics(ranked: Iterable[Sequence[int]], relevant: Iterable[set[int]], k: int = 10
                    ) -> dict[str, float]:
    """Mean of ``user_metrics`` over users whose relevant set is non-empty; keys MAP, nDCG@k, ..."""
    rows = [user_metrics(r, rel, k) for r, rel in zip(ranked, relevant) if rel]
    if not rows:
        raise ValueError("no user has a relevant item")
    mean = {m: float(np.mean([row[m] for row in rows])) for m in rows[0]}
    return {"MAP": mean["map"], f"nDCG@{k}": mean["ndcg"], f"Precision@{k}": mean["precision"],
            f"Recall@{k}": mean["recall"]}
