"""Recommendations: fold-in math, ranking metrics, the serving contract, and the tab with the shipped weights."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from demos.recommend_service import MAX_K, Recommender, serve  # noqa: E402
from models.recsys import BiasedMF, BPRMF, RecConfig  # noqa: E402
from training.rank_metrics import ranking_metrics, user_metrics  # noqa: E402

N_USERS, N_ITEMS, DIM = 20, 60, 8


def toy_models(seed: int = 0) -> tuple[BPRMF, BiasedMF]:
    torch.manual_seed(seed)
    meta = dict(n_users=N_USERS, n_items=N_ITEMS, dim=DIM, titles=[f"Movie {i + 1} (1990)" for i in range(N_ITEMS)],
                years=[1990] * N_ITEMS, genres=["Drama"] * N_ITEMS)
    ranker, rater = BPRMF(RecConfig(**meta)).eval(), BiasedMF(RecConfig(**meta)).eval()
    seen = [sorted(np.random.default_rng(u).choice(N_ITEMS, 5 + u, replace=False).tolist()) for u in range(N_USERS)]
    ranker.set_seen(seen)
    rater.set_seen(seen)
    return ranker, rater


@pytest.fixture()
def rec() -> Recommender:
    return Recommender(*toy_models())


# --------------------------------------------------------------------------- Bayesian MF (Gibbs sampler)

def test_bpmf_recovers_a_planted_low_rank_matrix() -> None:
    """Ratings = 3 + user bias + item bias + rank-3 product + N(0, 0.3^2) noise, half observed: the
    posterior means predict the hidden half near the noise floor and learn the noise precision."""
    from training import bpmf
    g = torch.Generator().manual_seed(0)
    n_users, n_items, noise = 80, 60, 0.3
    u_true, v_true = torch.randn(n_users, 3, generator=g) * 0.7, torch.randn(n_items, 3, generator=g) * 0.7
    biases = 0.3 * torch.randn(n_users, 1, generator=g) + 0.3 * torch.randn(1, n_items, generator=g)
    full = 3.0 + biases + u_true @ v_true.T
    users, items = torch.meshgrid(torch.arange(n_users), torch.arange(n_items), indexing="ij")
    users, items = users.flatten(), items.flatten()
    ratings = full.flatten() + noise * torch.randn(users.numel(), generator=g)
    seen = torch.rand(users.numel(), generator=g) < 0.5
    post = bpmf.gibbs(users[seen], items[seen], ratings[seen], n_users, n_items, dim=3, burn_in=30, samples=60,
                      progress=False)
    hidden = ~seen
    pred = (post.global_mean + post.user_bias[users[hidden]] + post.item_bias[items[hidden]]
            + (post.user_factors[users[hidden]] * post.item_factors[items[hidden]]).sum(1))
    rmse = float((pred - full.flatten()[hidden]).square().mean().sqrt())        # against the noiseless truth
    baseline = float((full.flatten()[hidden] - ratings[seen].mean()).square().mean().sqrt())
    assert rmse < 0.2 and baseline > 4 * rmse, (rmse, baseline)
    assert 0.5 / noise ** 2 < post.noise_precision < 1.5 / noise ** 2
    assert post.user_precision.shape == (3, 3) and torch.isfinite(post.user_precision).all()


def test_gibbs_recipe_trains_a_biased_mf() -> None:
    """The recipe path the shipped weights take: the posterior means land in a plain BiasedMF."""
    from training import movielens as ml
    from training.recommend import rmse, train_model
    rng = np.random.default_rng(0)
    n = 3000
    data = ml.Ratings(rng.integers(0, ml.N_USERS, n), rng.integers(0, ml.N_ITEMS, n),
                      rng.integers(1, 6, n).astype(np.float32))
    recipe = dict(model="mf", optimizer="gibbs", dim=4, burn_in=2, samples=3, seed=0, fold_lambda=2.0)
    model = train_model(recipe, data, quiet=True)
    assert isinstance(model, BiasedMF) and model.config.dim == 4 and model.config.fold_lambda == 2.0
    assert model.config.global_mean == pytest.approx(float(data.ratings.mean()))
    assert math.isfinite(rmse(model, data)) and rmse(model, data) < float(data.ratings.std())


# --------------------------------------------------------------------------- fold-in

@pytest.mark.parametrize("implicit", [False, True])
def test_mf_fold_in_recovers_planted_user(implicit: bool) -> None:
    torch.manual_seed(1)
    mf = BiasedMF(RecConfig(n_users=3, n_items=N_ITEMS, dim=DIM, implicit=implicit)).eval()
    if implicit:
        torch.nn.init.normal_(mf.implicit_emb.weight, std=0.1)
    bias, vec = torch.tensor(0.3), torch.randn(DIM) * 0.5
    items = torch.arange(40)
    z = mf.implicit_emb.weight[items].sum(0) / 40 ** 0.5 if implicit else torch.zeros(DIM)
    ratings = (mf.config.global_mean + bias + mf.item_bias[items] + mf.item_emb.weight[items] @ (vec + z)).detach()
    b_hat, v_hat = mf.fold_in(items, ratings, lam=1e-6)
    assert abs(float(b_hat - bias)) < 1e-3
    assert torch.allclose(v_hat, (vec + z).detach(), atol=1e-3)  # the user's effective factor


def test_mf_fold_in_ridge_shrinks() -> None:
    _, mf = toy_models()
    items, ratings = torch.tensor([0, 1]), torch.tensor([5.0, 5.0])
    _, small = mf.fold_in(items, ratings, lam=0.01)
    _, big = mf.fold_in(items, ratings, lam=100.0)
    assert big.norm() < small.norm()


def test_bpr_fold_in_solves_its_objective() -> None:
    ranker, _ = toy_models()
    liked = torch.tensor([3, 7, 11])
    alpha, lam, t = 0.1, 0.5, 1.0
    u = ranker.fold_in(liked, alpha=alpha, lam=lam, target=t).requires_grad_(True)
    Q = ranker.item_emb.weight.detach()
    pred = Q @ u
    mask = torch.zeros(N_ITEMS, dtype=torch.bool)
    mask[liked] = True
    loss = (t - pred[mask]).square().sum() + alpha * pred[~mask].square().sum() + lam * u.square().sum()
    loss.backward()
    assert u.grad.abs().max() < 1e-4  # the closed form is the minimizer: zero gradient


def test_bpr_fold_in_recovers_planted_user() -> None:
    ranker, _ = toy_models()
    torch.manual_seed(2)
    planted = torch.randn(DIM)
    Q = ranker.item_emb.weight.detach()
    # everything liked, alpha = 1: plain least squares of the targets on the item factors
    u = ranker.fold_in(torch.arange(N_ITEMS), alpha=1.0, lam=1e-6, target=1.0)
    expected = torch.linalg.lstsq(Q, torch.ones(N_ITEMS, 1)).solution[:, 0]
    assert torch.allclose(u, expected, atol=1e-3)
    # a planted user's top-3 items as the liked set: the folded-in vector points the planted way
    liked = (Q @ planted).topk(3).indices
    ranker.item_bias.data.zero_()
    folded = ranker.fold_in(liked, alpha=0.05, lam=1e-3)
    cos = torch.nn.functional.cosine_similarity(folded, planted, dim=0)
    assert cos > 0.5


# --------------------------------------------------------------------------- metrics

def test_user_metrics_hand_computed() -> None:
    # ranked [a, b, c, d], relevant {a, c, e}: hits at ranks 1 and 3, k = 4
    m = user_metrics([1, 2, 3, 4], {1, 3, 5}, k=4)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)


def test_ranking_metrics_perfect_empty_and_average() -> None:
    perfect = ranking_metrics([[1, 2]], [{1, 2}], k=2)
    assert perfect == {"MAP": 1.0, "nDCG@2": 1.0, "Precision@2": 1.0, "Recall@2": 1.0}
    miss = ranking_metrics([[7, 8]], [{1}], k=2)
    assert all(v == 0 for v in miss.values())
    # users without relevant items are skipped; the others are averaged
    avg = ranking_metrics([[1, 2], [7, 8], [3, 4]], [{1, 2}, {1}, set()], k=2)
    assert avg["nDCG@2"] == pytest.approx(0.5) and avg["Precision@2"] == pytest.approx(0.5)
    # relevant beyond k: ideal DCG counts only k positions, so a full top-k is nDCG 1
    assert ranking_metrics([[1, 2]], [{1, 2, 3, 4}], k=2)["nDCG@2"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ranking_metrics([[1]], [set()], k=1)


# --------------------------------------------------------------------------- serving

def test_known_user_never_gets_seen_items(rec: Recommender) -> None:
    for user in range(1, N_USERS + 1):
        seen = set((rec.models["bpr"].seen(user - 1) + 1).tolist())
        for model in ("bpr", "mf"):
            got = [r["movie_id"] for r in rec.get_recommendations(user, 30, True, model)]
            assert len(got) == 30 and not seen & set(got)


def test_unfiltered_may_return_seen(rec: Recommender) -> None:
    user = N_USERS  # has the most seen items
    seen = set((rec.models["bpr"].seen(user - 1) + 1).tolist())
    got = [r["movie_id"] for r in rec.get_recommendations(user, N_ITEMS, False, "bpr")]
    assert seen <= set(got)  # every item is ranked, seen ones included


def test_visitor_filtering_and_k_bound(rec: Recommender) -> None:
    rec.set_ratings("ana", {1: 5, 2: 4, 3: 1})
    got = rec.get_recommendations("ana", MAX_K, True, "mf")
    assert len(got) == N_ITEMS - 3 and not {1, 2, 3} & {r["movie_id"] for r in got}
    assert all(1 <= r["score"] <= 5 for r in got)
    assert all(r["because"] in ("Movie 1 (1990)", "Movie 2 (1990)") for r in got)
    rec.set_ratings("cy", {1: 1, 2: 2})  # nothing liked: ranked from what was watched, no movie named as liked
    for model in ("bpr", "mf"):
        got = rec.get_recommendations("cy", 5, True, model)
        assert len(got) == 5 and all(r["because"] == "" for r in got)


def test_shipped_rankers_agree_on_the_movies() -> None:
    """The app takes titles, years and genres from the BPR ranker's config (its years were once stale)."""
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    configs = [json.loads((root / "weights" / name / "config.json").read_text())
               for name in ("bpr-movielens", "mf-movielens")]
    for key in ("titles", "years", "genres"):
        assert configs[0][key] == configs[1][key], key
    assert configs[0]["years"][configs[0]["titles"].index("Return of the Jedi (1983)")] == 1983  # not 1997


def test_cache_hit_and_invalidation(rec: Recommender) -> None:
    rec.set_ratings("bo", {5: 5, 6: 5})
    first = rec.get_recommendations("bo", 5)
    hits = rec.cache_hits
    assert rec.get_recommendations("bo", 5) == first and rec.cache_hits == hits + 1
    rec.set_ratings("bo", {5: 5, 6: 5})  # same ratings: the cache stays
    rec.get_recommendations("bo", 5)
    assert rec.cache_hits == hits + 2
    top = first[0]["movie_id"]
    rec.rate("bo", top, 2)  # a change: the next call recomputes and hides the newly seen movie
    second = rec.get_recommendations("bo", 5)
    assert rec.cache_hits == hits + 2 and top not in {r["movie_id"] for r in second}
    # other users' caches are untouched; a known user's new rating invalidates theirs
    known = rec.get_recommendations(1, 3)
    rec.rate(1, known[0]["movie_id"], 5)
    assert known[0]["movie_id"] not in {r["movie_id"] for r in rec.get_recommendations(1, 3)}


def test_cache_holds_one_list_per_setting_and_a_bounded_number_of_users(rec: Recommender, monkeypatch) -> None:
    import demos.recommend_service as service
    monkeypatch.setattr(service, "MAX_CACHED_USERS", 3)
    longest = rec.get_recommendations(2, service.MAX_K)
    hits = rec.cache_hits
    for k in (1, 7, 20):  # any k is a slice of the one cached list, identical to computing it
        assert rec.get_recommendations(2, k) == longest[:k]
    assert rec.cache_hits == hits + 3 and list(rec._cache[2]) == [(True, "bpr")]
    for user in range(3, 8):
        rec.get_recommendations(user, 5)
    assert list(rec._cache) == [5, 6, 7]  # least recently used users dropped


BAD_REQUESTS = [
    None, "user=1", [1, 2], 42,                                  # not an object
    {},                                                           # no user
    {"user": 0}, {"user": N_USERS + 1}, {"user": -3},             # unknown known-user ids
    {"user": "nobody"},                                           # visitor without ratings
    {"user": 1.5}, {"user": True}, {"user": None}, {"user": ""}, {"user": "x" * 100},
    {"user": 1, "k": 0}, {"user": 1, "k": -1}, {"user": 1, "k": MAX_K + 1}, {"user": 1, "k": "10"},
    {"user": 1, "k": 2.5}, {"user": 1, "k": True}, {"user": 1, "k": None},
    {"user": 1, "filter_seen": "yes"}, {"user": 1, "model": "svd"}, {"user": 1, "colour": "red"},
    {"user": "ana", "ratings": {"999": 5}}, {"user": "ana", "ratings": {"1": 6}},
    {"user": "ana", "ratings": {"1": float("nan")}}, {"user": "ana", "ratings": [[1]]},
    {"user": "ana", "ratings": "1:5"}, {"user": "ana", "ratings": {"one": 5}},
    {"action": "delete", "user": 1}, {"action": "similar"}, {"action": "similar", "movie_id": 0},
    {"action": "similar", "movie_id": 1, "k": 0},
]


def test_serve_rejects_bad_requests(rec: Recommender) -> None:
    assert len(BAD_REQUESTS) == 34
    for request in BAD_REQUESTS:
        out = serve(rec, request)
        assert out["status"] == "error", request
        assert isinstance(out["error"], str) and out["error"] and "internal" not in out["error"], request


def test_serve_success_shapes(rec: Recommender) -> None:
    out = serve(rec, {"user": 3, "k": 4, "filter_seen": True, "model": "mf"})
    assert out["status"] == "success" and len(out["recommendations"]) == 4
    assert set(out["recommendations"][0]) == {"movie_id", "title", "year", "genres", "score", "because"}
    out = serve(rec, {"user": "cy", "ratings": [[10, 5], [11, 4]], "k": 3})
    assert out["status"] == "success" and {r["movie_id"] for r in out["recommendations"]}.isdisjoint({10, 11})
    assert serve(rec, {"user": "cy"})["status"] == "success"  # the visitor now exists
    out = serve(rec, {"action": "similar", "movie_id": 1, "k": 5})
    assert out["status"] == "success" and 1 not in {r["movie_id"] for r in out["similar"]}


def test_serve_never_raises_on_internal_failure(rec: Recommender) -> None:
    rec.models["bpr"] = None  # a broken service still answers with an error dict
    out = serve(rec, {"user": 1})
    assert out["status"] == "error"


# --------------------------------------------------------------------------- the tab, shipped weights

@pytest.fixture(scope="module")
def tab():
    import weights
    if not (weights.available("bpr-movielens") and weights.available("mf-movielens")):
        pytest.skip("shipped weights not present: run python -m training.recommend [--model bpr]")
    from demos import recommend
    return recommend


def _id(tab, title: str) -> int:
    return next(v for name, v in tab.movie_choices() if name == title)


def test_tab_new_visitor(tab) -> None:
    picked = [_id(tab, "Star Wars (1977)"), _id(tab, "Toy Story (1995)")]
    table = tab.ratings_table(picked)
    assert table == [["Star Wars (1977)", 4], ["Toy Story (1995)", 4]]
    table[1][1] = 5
    assert tab.ratings_table(picked, table)[1][1] == 5  # typed ratings survive a new pick
    for model in ("bpr", "mf"):
        rows = tab.recommend_visitor(picked, table, model, 10)
        assert len(rows) == 10
        titles = {r[1] for r in rows}
        assert "Star Wars (1977)" not in titles and "Toy Story (1995)" not in titles
        assert all(r[4] in ("Star Wars (1977)", "Toy Story (1995)") for r in rows)
    # BPR puts Star Wars' sequels near a Star Wars fan
    rows = tab.recommend_visitor([_id(tab, "Star Wars (1977)")], None, "bpr", 20)
    assert {"Return of the Jedi (1983)", "Empire Strikes Back, The (1980)"} & {r[1] for r in rows}


def test_changing_the_model_clears_results_and_names_the_score(tab) -> None:
    import gradio as gr
    visitor, user = tab.result_tables("mf")
    assert visitor.headers == user.headers == ["#", "movie", "genres", "predicted rating (1-5)", "because you liked"]
    assert visitor.value["data"] == user.value["data"] == []
    assert tab.result_tables("bpr")[0].headers[3] == "ranking score"
    with pytest.raises(gr.Error, match="Unknown model"):
        tab.result_tables("svd")


def test_tab_known_user_and_similar(tab) -> None:
    note, history = tab.user_history(1)
    assert "User 1" in note and len(history) == 20
    rows = tab.recommend_user(1, "bpr", 10, True)
    assert len(rows) == 10 and not {r[1] for r in rows} & {h[0] for h in tab.user_history(1, n=1000)[1]}
    sims = tab.similar_movies(_id(tab, "Return of the Jedi (1983)"), 5)
    assert len(sims) == 5 and all(-1 <= r[3] <= 1 for r in sims)
    # MF predictions rank unclamped (user 1's best is above 5 stars) and are shown on the 1-5 scale
    rows = tab.recommend_user(1, "mf", 20, True)
    raw = tab.service().scores(1, "mf")
    assert raw.max() > 5 and [r[3] for r in rows] == sorted((r[3] for r in rows), reverse=True)
    assert rows[0][3] == 5.0 and all(1 <= r[3] <= 5 for r in rows)


def test_true_ratings_are_published_whole(tab, monkeypatch, tmp_path) -> None:
    """A concurrent request never sees a half-built {user: {item: rating}} table."""
    import training.movielens as ml
    (tmp_path / "u.data").write_text("")
    seen_during_build = []

    class Slow(list):  # while the table is being built, look at what another request would get
        def __iter__(self):
            for n, x in enumerate(list.__iter__(self)):
                if n == 2:
                    seen_during_build.append(dict(tab._true_ratings.__globals__["_true_cache"]))
                yield x

    data = type("D", (), {"users": torch.tensor([0, 0, 1, 1]), "items": torch.tensor([0, 1, 0, 2]),
                          "ratings": type("R", (), {"tolist": lambda self: Slow([5.0, 3.0, 4.0, 1.0])})()})()
    monkeypatch.setattr(ml, "default_path", lambda: tmp_path)
    monkeypatch.setattr(ml, "load_ratings", lambda path: data)
    monkeypatch.setattr(tab, "_true_cache", {})
    assert tab._true_ratings() == {1: {0: 5.0, 1: 3.0}, 2: {0: 4.0, 2: 1.0}}
    assert seen_during_build == [{}]


def test_tab_bad_inputs(tab) -> None:
    import gradio as gr
    for call in (lambda: tab.recommend_visitor([], None), lambda: tab.recommend_user(0),
                 lambda: tab.recommend_user("abc"), lambda: tab.recommend_user(1, "bpr", 0),
                 lambda: tab.similar_movies(None), lambda: tab.similar_movies(99999),
                 lambda: tab.recommend_visitor([1], [["Toy Story (1995)", 9]]),
                 lambda: tab.recommend_visitor([1], [["Toy Story (1995)", "great"]]),
                 lambda: tab.recommend_user(float("inf")), lambda: tab.recommend_user(1, "bpr", float("inf")),
                 lambda: tab.similar_movies(float("inf")), lambda: tab.similar_movies("Star Wars")):
        with pytest.raises(gr.Error):
            call()


def test_tab_ratings_rows_and_flags_from_api_callers(tab) -> None:
    """A row whose title matches no movie (an API caller's lower-case title) used to be dropped without a word,
    the movie then rated the default 4; a rating of true counted as 1 and filter_seen="false" as true."""
    import gradio as gr
    star_wars = _id(tab, "Star Wars (1977)")
    with pytest.raises(gr.Error, match="star wars .1977.', which is no movie title"):
        tab.recommend_visitor([star_wars], [["star wars (1977)", 1]], "mf", 3)
    with pytest.raises(gr.Error, match="must be a number from 1 to 5"):
        tab.recommend_visitor([star_wars], [["Star Wars (1977)", True]], "mf", 3)
    with pytest.raises(gr.Error, match="must be true or false"):
        tab.recommend_user(1, "bpr", 3, "false")
    with pytest.raises(gr.Error) as e:
        tab.similar_movies(star_wars, float("nan"))
    assert e.value.message == "k must be a whole number."  # not wrapped a second time, in quotes
    with pytest.raises(gr.Error, match="Pick at most 50 movies, got 51"):  # the browser's picker stops at 50
        tab.recommend_visitor(list(range(1, 52)), None, "mf", 3)
    # a movie id names the row too; a row for a movie no longer picked (the table lags a pick) is ignored
    assert tab._ratings_from([star_wars], [[star_wars, 1], ["Toy Story (1995)", 2]]) == {star_wars: 1.0}
    assert tab._ratings_from([star_wars], [["Star Wars (1977)", 2]]) == {star_wars: 2.0}


# --------------------------------------------------------------------------- found surviving mutations

def test_map_and_recall_divide_by_every_held_out_item_not_k():
    """More relevant items than k: the benchmark's map_at_k and recall divide by |relevant| (4), not min(4, k)."""
    m = user_metrics([1, 2], {1, 2, 3, 4}, k=2)
    assert m["map"] == pytest.approx((1 / 1 + 2 / 2) / 4)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["precision"] == 1.0 and m["ndcg"] == pytest.approx(1.0)


def test_evaluation_top_k_never_returns_a_training_item():
    from training.recommend import top_k
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    exclude = torch.tensor([[True, False, True, False, False], [False, False, False, False, True]])
    assert top_k(scores, exclude, k=2) == [[1, 3], [3, 2]]


def test_a_rating_of_4_is_liked_and_reasons_name_the_closest_liked_movie(rec):
    rec.set_ratings("dee", {1: 5, 2: 4, 3: 1})
    assert rec.liked("dee").tolist() == [0, 1]  # LIKED = 4.0: a 4 is liked, a 1 is not
    got = rec.get_recommendations("dee", 20, True, "bpr")
    sim = rec.models["bpr"].item_similarity(torch.tensor([r["movie_id"] - 1 for r in got]), torch.tensor([0, 1]))
    assert [r["because"] for r in got] == [f"Movie {int(j) + 1} (1990)" for j in sim.argmax(1)]
    assert len({r["because"] for r in got}) == 2  # both liked movies explain something here


def test_visitor_mf_scores_are_folded_in_from_the_ratings_given(rec):
    mf = rec.models["mf"]
    rec.set_ratings("lo", {1: 1, 2: 1, 3: 1})
    rec.set_ratings("hi", {1: 5, 2: 5, 3: 5})
    bias, vec = mf.fold_in(torch.tensor([0, 1, 2]), torch.tensor([5.0, 5.0, 5.0]))
    assert torch.allclose(rec.scores("hi", "mf"), mf.scores_for(vec[None], bias[None])[0], atol=1e-5)
    assert rec.scores("hi", "mf").mean() > rec.scores("lo", "mf").mean() + 1  # a 5-star fan, a 1-star critic


def test_tab_known_user_unfiltered_lists_what_they_rated(tab):  # noqa: F811
    seen = {h[0] for h in tab.user_history(1, n=1000)[1]}
    unfiltered = tab.recommend_user(1, "bpr", 50, False)
    assert seen & {r[1] for r in unfiltered}  # "Hide movies the user has rated" off: they may come back
    assert unfiltered == tab._rows(tab.service().get_recommendations(1, 50, False, "bpr"))
