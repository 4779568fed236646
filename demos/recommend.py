"""Recommendations tab: movie recommendations from MovieLens-100K matrix factorization.

A visitor picks and rates a few movies and gets recommendations at once (their vector is folded in
against the frozen item embeddings); one can also browse as one of the 943 MovieLens users, or ask for
movies similar to one. The logic lives in ``demos.recommend_service``; these functions only adapt it.
"""
from __future__ import annotations

import reprlib
import threading
from collections import Counter
from typing import Any, Optional

import gradio as gr

from demos.common import NumberInput, SliderInput, load_model, weights_status
from demos.recommend_service import MAX_K, RecommendError, Recommender

TITLE = "Recommendations"
RANKER, RATER = "bpr-movielens", "mf-movielens"
MODEL_CHOICES = [("Ranking (BPR-MF): what you are likely to watch", "bpr"),
                 ("Predicted rating (biased MF): what you would rate highest", "mf")]
# the score column says what the chosen model's number is
RESULT_HEADERS = {"bpr": ["#", "movie", "genres", "ranking score", "because you liked"],
                  "mf": ["#", "movie", "genres", "predicted rating (1-5)", "because you liked"]}
DEFAULT_RATING = 4
MAX_PICKS = 50        # movies a visitor may pick
# px, not %: on a phone the tables scroll sideways instead of squeezing words into one letter a line
RESULT_WIDTHS = ["45px", "300px", "180px", "120px", "280px"]
# Every event of this tab takes milliseconds: one queue group of 4 workers, separate from slow tabs.
QUEUE = {"concurrency_limit": 4, "concurrency_id": "recommend"}

_service: Optional[Recommender] = None
_service_lock = threading.Lock()


def service() -> Recommender:
    """The process-wide recommender (models loaded once; a missing weights folder is a gr.Error)."""
    global _service
    with _service_lock:
        if _service is None:
            ranker = load_model(RANKER)
            try:
                rater = load_model(RATER)
            except gr.Error:  # the ranker alone still serves the tab
                rater = None
            _service = Recommender(ranker, rater)
        return _service


def label(s: Recommender, item: int) -> str:
    """'Title (year)'; MovieLens titles already end with the year. Duplicate titles get their id."""
    title = s.titles[item]
    return f"{title} [#{item + 1}]" if _duplicates(s).get(title, 0) > 1 else title


_dups: Optional[Counter] = None


def _duplicates(s: Recommender) -> Counter:
    global _dups
    if _dups is None:  # built whole, then published: concurrent first calls cannot double-count
        _dups = Counter(s.titles)
    return _dups


def movie_choices() -> list[tuple[str, int]]:
    s = service()
    return sorted(((label(s, i), i + 1) for i in range(s.n_items)), key=lambda c: c[0].lower())


def _table(rows: Any) -> list[list[Any]]:
    """A Dataframe value (pandas or list of lists) as a list of rows."""
    if rows is None:
        return []
    if hasattr(rows, "values"):
        rows = rows.values.tolist()
    return [list(r) for r in rows]


def _picked(selected: Any) -> list[Any]:
    """The multiselect value as a list (an API client may send a bare value such as ``true``)."""
    if selected is None:
        return []
    if not isinstance(selected, (list, tuple)):
        raise gr.Error("The picked movies must be a list of movie ids.")
    if len(selected) > MAX_PICKS:  # the browser's picker stops there; an API caller's list may not
        raise gr.Error(f"Pick at most {MAX_PICKS} movies, got {len(selected)}.")
    return list(selected)


def ratings_table(selected: Optional[list[int]], current: Any = None) -> list[list[Any]]:
    """Rows [movie, rating] for the picked movies, keeping ratings already typed in."""
    selected = _picked(selected)
    s = service()
    kept = {str(r[0]): r[1] for r in _table(current) if len(r) >= 2}
    rows = []
    for movie_id in selected or []:
        name = label(s, int(movie_id) - 1)
        rows.append([name, kept.get(name, DEFAULT_RATING)])
    return rows


def _movie_of_row(s: Recommender, key: Any, picked: dict[str, int]) -> int | None:
    """The movie id a ratings-table row names (its title as the table lists it, or an API caller's movie id);
    None for a movie that is not picked (the table is rebuilt after each pick, so it may lag behind)."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key if key in picked.values() else None
    if str(key) in picked:
        return picked[str(key)]
    if str(key) in _all_labels(s):
        return None
    raise gr.Error(f"The ratings table names {reprlib.repr(key)}, which is no movie title as the table lists "
                   f"them (e.g. {next(iter(picked))!r}) nor a movie id.")


_labels: Optional[frozenset[str]] = None


def _all_labels(s: Recommender) -> frozenset[str]:
    global _labels
    if _labels is None:  # built once, then published whole (as _duplicates)
        _labels = frozenset(label(s, i) for i in range(s.n_items))
    return _labels


def _ratings_from(selected: Optional[list[int]], table: Any) -> dict[int, float]:
    s = service()
    picked = {label(s, int(movie_id) - 1): int(movie_id) for movie_id in selected or []}
    given = {}
    for row in _table(table):
        if len(row) >= 2 and (movie := _movie_of_row(s, row[0], picked)) is not None:
            given[movie] = row[1]
    ratings = {}
    for name, movie_id in picked.items():
        value = given.get(movie_id, DEFAULT_RATING)
        try:
            if isinstance(value, bool):  # float(True) would be a rating of 1
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            raise gr.Error(f"The rating of {name} must be a number from 1 to 5.") from None
        if not 1 <= value <= 5:
            raise gr.Error(f"The rating of {name} must be from 1 to 5, got {value:g}.")
        ratings[movie_id] = value
    return ratings


def _rows(recs: list[dict[str, Any]]) -> list[list[Any]]:
    return [[n + 1, r["title"], r["genres"], r["score"], r["because"]] for n, r in enumerate(recs)]


def _k(k: Any) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise gr.Error("k must be a whole number.") from None
    if not 1 <= k <= MAX_K:
        raise gr.Error(f"k must be from 1 to {MAX_K}.")
    return k


def recommend_visitor(selected: Optional[list[int]], table: Any, model: str = "bpr", k: Any = 10,
                      request: Optional[gr.Request] = None) -> list[list[Any]]:
    """Top-k for a new visitor from the movies they picked and the ratings they gave."""
    selected = _picked(selected)
    if not selected:
        raise gr.Error("Pick at least one movie you have seen.")
    s = service()
    visitor = f"visitor:{getattr(request, 'session_hash', None) or 'anonymous'}"
    try:
        s.set_ratings(visitor, _ratings_from(selected, table))
        return _rows(s.get_recommendations(visitor, _k(k), True, model))
    except RecommendError as e:
        raise gr.Error(str(e)) from None


def _user(user_id: Any) -> int:
    s = service()
    try:
        user = int(user_id)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"Enter a user id from 1 to {s.n_users}.") from None
    if not s.is_known(user):
        raise gr.Error(f"Unknown user {user_id}: MovieLens-100K users are 1 to {s.n_users}.")
    return user


def user_history(user_id: Any, n: int = 20) -> tuple[str, list[list[Any]]]:
    """The movies a MovieLens user rated. Their ratings are not shipped (GroupLens' licence), so they
    are shown when the dataset is present beside the clone; otherwise the seen movies are listed by the
    rating the biased-MF model predicts for them."""
    s = service()
    user = _user(user_id)
    seen = s.seen(user)
    true = _true_ratings().get(user)
    if true:
        order = sorted(seen.tolist(), key=lambda i: (-true.get(i, 0), s.titles[i]))[:n]
        rows = [[s.titles[i], s.genres[i], true.get(i, "")] for i in order]
        note = f"User {user} rated {len(seen)} movies; their top-rated (from the dataset's u.data):"
    elif s.models["mf"] is not None:
        pred = s.scores(user, "mf")[seen]
        order = pred.argsort(descending=True)[:n]
        rows = [[s.titles[int(seen[j])], s.genres[int(seen[j])], round(s.shown(float(pred[j]), "mf"), 2)]
                for j in order]
        note = (f"User {user} rated {len(seen)} movies. The ratings themselves are not shipped with the app "
                "(MovieLens licence), so these are the seen movies the MF model predicts they rated highest:")
    else:
        rows = [[s.titles[int(i)], s.genres[int(i)], ""] for i in seen[:n]]
        note = f"User {user} rated {len(seen)} movies (ratings not shipped):"
    return note, rows


_true_cache: dict[int, dict[int, float]] = {}


def _true_ratings() -> dict[int, dict[int, float]]:
    """{user: {item: rating}} from ../shared/datasets/ml-100k/u.data when it exists, else {}."""
    global _true_cache
    if not _true_cache:
        from training.movielens import default_path, load_ratings
        if (default_path() / "u.data").is_file():
            try:
                data = load_ratings(default_path())
            except Exception:
                return {}
            table: dict[int, dict[int, float]] = {}
            for u, i, r in zip(data.users.tolist(), data.items.tolist(), data.ratings.tolist()):
                table.setdefault(u + 1, {})[i] = r
            _true_cache = table  # built whole, then published: a concurrent call never sees it half-filled
    return _true_cache


def recommend_user(user_id: Any, model: str = "bpr", k: Any = 10, filter_seen: bool = True
                   ) -> list[list[Any]]:
    if not isinstance(filter_seen, bool):  # an API caller's "false" would otherwise count as true
        raise gr.Error(f"'Hide movies the user has rated' must be true or false, not {reprlib.repr(filter_seen)}.")
    s = service()
    try:
        return _rows(s.get_recommendations(_user(user_id), _k(k), filter_seen, model))
    except RecommendError as e:
        raise gr.Error(str(e)) from None


def similar_movies(movie_id: Any, k: Any = 10) -> list[list[Any]]:
    if movie_id in (None, ""):
        raise gr.Error("Pick a movie.")
    s = service()
    try:
        movie = int(movie_id)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"Pick a movie from the list (a MovieLens movie id from 1 to {len(s.titles)}).") from None
    k = _k(k)  # its gr.Error is a ValueError too, which the except below would wrap in quotes
    try:
        recs = s.similar(movie, k)
    except (RecommendError, ValueError) as e:
        raise gr.Error(str(e)) from None
    return [[n + 1, r["title"], r["genres"], r["similarity"]] for n, r in enumerate(recs)]


def result_tables(model: str) -> tuple[Any, Any]:
    """Both recommendation tables emptied, with the score column named for ``model``."""
    if model not in RESULT_HEADERS:
        raise gr.Error(f"Unknown model {reprlib.repr(model)}: choose one of {', '.join(RESULT_HEADERS)}.")
    return tuple(gr.Dataframe(value=[], headers=RESULT_HEADERS[model]) for _ in range(2))


def build() -> None:
    banner = weights_status(RANKER, RATER)
    if banner:
        gr.Markdown(banner)
    gr.Markdown("Collaborative filtering on MovieLens-100K (943 users, 1,682 movies, 1995-1998 ratings). "
                "Pick movies you know and rate them: your taste vector is solved in closed form against the "
                "trained movie embeddings, so recommendations come at once without retraining.")
    try:
        choices = movie_choices()
    except gr.Error:
        choices = []
    model = gr.Radio(MODEL_CHOICES, value="bpr", label="Model (Similar movies always uses the ranking model's "
                     "movie embeddings)")
    k = SliderInput(1, 50, value=10, step=1, label="How many")
    with gr.Tab("New visitor"):
        picked = gr.Dropdown(choices, multiselect=True, filterable=True, label="Movies you have seen "
                             "(type to search)", max_choices=MAX_PICKS)
        table = gr.Dataframe(headers=["movie", "your rating (1-5)"], datatype=["str", "number"],
                             interactive=True, label="Your ratings (edit the numbers)", column_count=2,
                             static_columns=[0])
        go = gr.Button("Recommend", variant="primary")
        visitor_out = gr.Dataframe(headers=RESULT_HEADERS["bpr"], interactive=False, wrap=True,
                                   column_widths=RESULT_WIDTHS, label="Recommended for you")
        picked.change(ratings_table, [picked, table], table, api_name="recommend_rating_rows", **QUEUE)
        go.click(recommend_visitor, [picked, table, model, k], visitor_out, api_name="recommend_visitor", **QUEUE)
    with gr.Tab("MovieLens user"):
        with gr.Row():
            user = NumberInput(value=1, precision=0, minimum=1, maximum=943, label="User id (1-943)")
            filter_seen = gr.Checkbox(value=True, label="Hide movies the user has rated")
        with gr.Row():
            history_btn = gr.Button("Show history")
            rec_btn = gr.Button("Recommend", variant="primary")
        note = gr.Markdown()
        history = gr.Dataframe(headers=["movie", "genres", "rating"], interactive=False, wrap=True,
                               column_widths=RESULT_WIDTHS[1:4],
                               label="History")
        user_out = gr.Dataframe(headers=RESULT_HEADERS["bpr"], interactive=False, wrap=True, label="Recommended",
                                column_widths=RESULT_WIDTHS)
        history_btn.click(user_history, user, [note, history], api_name="recommend_user_history", **QUEUE)
        rec_btn.click(recommend_user, [user, model, k, filter_seen], user_out, api_name="recommend_user", **QUEUE)
    with gr.Tab("Similar movies"):
        movie = gr.Dropdown(choices, value=None, filterable=True, label="Movie (type to search)")
        sim_btn = gr.Button("Find similar")
        sim_out = gr.Dataframe(headers=["#", "movie", "genres", "similarity"], interactive=False, wrap=True,
                               column_widths=RESULT_WIDTHS[:4])
        sim_btn.click(similar_movies, [movie, k], sim_out, api_name="recommend_similar", **QUEUE)
    # another model's results under this model's column name would mislead: clear them and rename the column
    model.change(result_tables, model, [visitor_out, user_out], api_visibility="private", **QUEUE)
