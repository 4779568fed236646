"""Serving for the MovieLens recommenders: per-user top-k with a seen-item filter, a per-user cache that
a change of that user's ratings invalidates, and ``serve(request) -> dict`` that never raises.

Users are either one of MovieLens' 943 training users (an ``int`` 1..943, their learned vectors) or a
visitor (a ``str`` id) whose vector is folded in from the ratings they gave. Movie ids are MovieLens'
1-based ids; the models index items from 0.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any, Optional

import torch

from models.recsys import BiasedMF, BPRMF

MAX_K = 100
MAX_VISITORS = 1000          # least recently used visitors are forgotten beyond this
MAX_CACHED_USERS = 256       # results cached for this many users at most (least recently used dropped)
LIKED = 4.0                  # a rating >= this counts as "liked" (fold-in of the ranker, reasons)
MODELS = ("bpr", "mf")


class RecommendError(ValueError):
    """A request the service refuses; the message is meant for the user."""


class Recommender:
    def __init__(self, ranker: BPRMF, rater: Optional[BiasedMF] = None) -> None:
        self.models: dict[str, Any] = {"bpr": ranker, "mf": rater}
        c = ranker.config
        self.n_users, self.n_items = c.n_users, c.n_items
        self.titles, self.years, self.genres = c.titles, c.years, c.genres
        self._visitors: OrderedDict[str, dict[int, float]] = OrderedDict()
        self._added: dict[int, dict[int, float]] = {}   # ratings known users gave in this process
        # user -> {(filter_seen, model): top MAX_K}; any k is a slice, so a user holds at most 4 lists
        self._cache: OrderedDict[Any, dict[tuple, list[dict]]] = OrderedDict()
        self._lock = threading.RLock()
        self.cache_hits = 0

    # -- users and their ratings ------------------------------------------------------------------
    def is_known(self, user: Any) -> bool:
        return isinstance(user, int) and not isinstance(user, bool) and 1 <= user <= self.n_users

    def has_user(self, user: Any) -> bool:
        return self.is_known(user) or (isinstance(user, str) and user in self._visitors)

    def _check_movie(self, movie_id: Any) -> int:
        if isinstance(movie_id, str) and movie_id.strip().isdigit():
            movie_id = int(movie_id)
        if not isinstance(movie_id, int) or isinstance(movie_id, bool) or not 1 <= movie_id <= self.n_items:
            raise RecommendError(f"unknown movie id {movie_id!r}: ids run from 1 to {self.n_items}")
        return movie_id - 1

    @staticmethod
    def _check_rating(rating: Any) -> float:
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating) \
                or not 1 <= rating <= 5:
            raise RecommendError(f"rating {rating!r} is not a number from 1 to 5")
        return float(rating)

    def set_ratings(self, user: Any, ratings: dict[Any, Any]) -> None:
        """Replace a visitor's ratings ({movie id: 1..5}); for a known user, add them. Invalidates the
        user's cached results when anything changed."""
        clean = {self._check_movie(m): self._check_rating(r) for m, r in ratings.items()}
        with self._lock:
            if self.is_known(user):
                old = self._added.get(user, {})
                new = {**old, **clean}
                self._added[user] = new
            elif isinstance(user, str) and user.strip():
                old = self._visitors.get(user)
                new = clean
                self._visitors[user] = new
                self._visitors.move_to_end(user)
                while len(self._visitors) > MAX_VISITORS:
                    forgotten, _ = self._visitors.popitem(last=False)
                    self._cache.pop(forgotten, None)
            else:
                raise RecommendError(f"unknown user {user!r}: use an id 1..{self.n_users} or a visitor name")
            if new != old:
                self._cache.pop(user, None)

    def rate(self, user: Any, movie_id: int, rating: float) -> None:
        """Add or change one rating."""
        current = dict(self._visitors.get(user, {})) if isinstance(user, str) else {}
        self.set_ratings(user, {**{m + 1: r for m, r in current.items()}, movie_id: rating})

    def ratings(self, user: Any) -> dict[int, float]:
        """The ratings this process knows for ``user`` (0-based item ids)."""
        if self.is_known(user):
            return dict(self._added.get(user, {}))
        return dict(self._visitors.get(user, {}))

    def seen(self, user: Any) -> torch.Tensor:
        """0-based ids of every item the user has rated (training data + this session)."""
        extra = torch.tensor(sorted(self.ratings(user)), dtype=torch.long)
        if self.is_known(user):
            return torch.cat([self.models["bpr"].seen(user - 1), extra]).unique()
        return extra

    def liked(self, user: Any, fallback: bool = True) -> torch.Tensor:
        """Items the user liked: their ratings >= LIKED (with ``fallback``, all their ratings if none is that
        high: the ranker then folds in what they watched); for a known user, whose training ratings are not
        shipped, the 30 seen items the ranker scores highest."""
        if self.is_known(user):
            seen = self.seen(user)
            scores = self.models["bpr"].user_scores(torch.tensor([user - 1]))[0, seen]
            return seen[scores.topk(min(30, len(seen))).indices]
        r = self.ratings(user)
        liked = [i for i, v in r.items() if v >= LIKED] or (list(r) if fallback else [])
        return torch.tensor(sorted(liked), dtype=torch.long)

    # -- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, user: Any, model: str = "bpr") -> torch.Tensor:
        """Scores of every item for ``user``: BPR ranking scores, or MF predicted ratings (unclamped, so that
        they rank; ``shown`` puts a rating on the 1-5 scale)."""
        m = self.models.get(model)
        if m is None:
            raise RecommendError(f"model {model!r} is not available; use one of "
                                 f"{[k for k, v in self.models.items() if v is not None]}")
        if self.is_known(user):
            return m.user_scores(torch.tensor([user - 1]))[0]
        r = self.ratings(user)
        if not r:
            raise RecommendError(f"unknown user {user!r}: rate a few movies first")
        if model == "bpr":
            return m.scores_for(m.fold_in(self.liked(user))[None], torch.zeros(1))[0]
        items = torch.tensor(list(r), dtype=torch.long)
        bias, vec = m.fold_in(items, torch.tensor(list(r.values())))
        return m.scores_for(vec[None], bias[None])[0]

    @staticmethod
    def shown(score: float, model: str) -> float:
        """A score as the user sees it: MF predictions clamped to the 1-5 stars they stand for."""
        return round(min(max(score, 1.0), 5.0) if model == "mf" else score, 4)

    def get_recommendations(self, user: Any, k: int = 10, filter_seen: bool = True,
                            model: str = "bpr") -> list[dict[str, Any]]:
        """Top-``k`` movies for ``user`` (cached per user until their ratings change)."""
        if not self.has_user(user):
            raise RecommendError(f"unknown user {user!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RecommendError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        key = (bool(filter_seen), model)
        with self._lock:
            hit = self._cache.get(user, {}).get(key)
            if hit is not None:
                self.cache_hits += 1
                self._cache.move_to_end(user)
                return [dict(r) for r in hit[:k]]
            scores = self.scores(user, model).clone()
            if filter_seen:
                scores[self.seen(user)] = -torch.inf
            k_eff = min(MAX_K, int(torch.isfinite(scores).sum()))
            top = scores.topk(k_eff)
            reasons = self._reasons(top.indices, self.liked(user, fallback=False))  # never a movie rated low
            result = [self.movie(int(i)) | {"score": self.shown(float(s), model), "because": because}
                      for i, s, because in zip(top.indices, top.values, reasons)]
            self._cache.setdefault(user, {})[key] = result
            self._cache.move_to_end(user)
            while len(self._cache) > MAX_CACHED_USERS:
                self._cache.popitem(last=False)
            return [dict(r) for r in result[:k]]

    def _reasons(self, items: torch.Tensor, liked: torch.Tensor) -> list[str]:
        """For each recommended item, the liked item closest to it in the ranker's embedding space."""
        if len(liked) == 0 or len(items) == 0:
            return [""] * len(items)
        sim = self.models["bpr"].item_similarity(items, liked)
        best = sim.argmax(1)
        return [self.titles[int(liked[j])] for j in best]

    def similar(self, movie_id: Any, k: int = 10) -> list[dict[str, Any]]:
        item = self._check_movie(movie_id)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RecommendError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        with torch.no_grad():
            idx, sim = self.models["bpr"].similar_items(item, k)
        return [self.movie(int(i)) | {"similarity": round(float(s), 4)} for i, s in zip(idx, sim)]

    def movie(self, item: int) -> dict[str, Any]:
        return {"movie_id": item + 1, "title": self.titles[item], "year": self.years[item],
                "genres": self.genres[item]}


# --------------------------------------------------------------------------- the request contract

REQUEST_KEYS = {"action", "user", "k", "filter_seen", "model", "ratings", "movie_id"}


def _parse_ratings(raw: Any) -> dict[Any, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in raw):
        return {m: r for m, r in raw}
    raise RecommendError("ratings must be {movie_id: rating} or a list of [movie_id, rating] pairs")


def serve(recommender: Recommender, request: Any) -> dict[str, Any]:
    """Handle one request dict; returns {"status": "success", ...} or {"status": "error", "error": ...}.

    {"user": 5, "k": 10, "filter_seen": true, "model": "bpr"}                 known user
    {"user": "ana", "ratings": {"50": 5, "181": 4}, "k": 5}                    visitor (ratings replace hers)
    {"action": "similar", "movie_id": 50, "k": 5}                              similar movies
    """
    try:
        if not isinstance(request, dict):
            raise RecommendError(f"the request must be a JSON object, got {type(request).__name__}")
        unknown = set(request) - REQUEST_KEYS
        if unknown:
            raise RecommendError(f"unknown field(s) {sorted(map(str, unknown))}; allowed: {sorted(REQUEST_KEYS)}")
        action = request.get("action", "recommend")
        k = request.get("k", 10)
        if action == "similar":
            if "movie_id" not in request:
                raise RecommendError("'similar' needs a movie_id")
            return {"status": "success", "movie_id": request["movie_id"],
                    "similar": recommender.similar(request["movie_id"], k)}
        if action != "recommend":
            raise RecommendError(f"unknown action {action!r}: use 'recommend' or 'similar'")
        if "user" not in request:
            raise RecommendError("missing field 'user'")
        user = request["user"]
        if isinstance(user, bool) or not isinstance(user, (int, str)) or (isinstance(user, str) and
                                                                         not 0 < len(user.strip()) <= 64):
            raise RecommendError(f"user must be an id 1..{recommender.n_users} or a visitor name, got {user!r}")
        filter_seen = request.get("filter_seen", True)
        if not isinstance(filter_seen, bool):
            raise RecommendError(f"filter_seen must be true or false, got {filter_seen!r}")
        model = request.get("model", "bpr")
        if model not in MODELS:
            raise RecommendError(f"unknown model {model!r}: use one of {list(MODELS)}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise RecommendError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        if isinstance(user, int) and not recommender.is_known(user):
            raise RecommendError(f"unknown user {user}: known users are 1..{recommender.n_users}")
        if "ratings" in request:
            recommender.set_ratings(user, _parse_ratings(request["ratings"]))
        if not recommender.has_user(user):
            raise RecommendError(f"unknown user {user!r}: send ratings to create a visitor")
        recs = recommender.get_recommendations(user, k, filter_seen, model)
        return {"status": "success", "user": user, "model": model, "recommendations": recs}
    except RecommendError as e:
        return {"status": "error", "error": str(e)}
    except Exception as e:  # never raise to the caller
        return {"status": "error", "error": f"internal error: {type(e).__name__}: {e}"}
