"""The recommendations tab in a real browser: a new visitor picks movies and gets recommendations."""
import pytest

import weights
from conftest import save_screenshot
from demos import recommend as tab

pytestmark = pytest.mark.skipif(not all(map(weights.available, (tab.RANKER, tab.RATER))),
                                reason="recommender weights not trained yet")

PICKS = ["Star Wars", "Toy Story", "Fargo"]


def test_new_visitor_gets_recommendations(page, open_tab):
    panel = open_tab("recommend")
    picker = panel.get_by_label("Movies you have seen", exact=False)
    for title in PICKS:
        picker.click()
        picker.fill(title)
        page.keyboard.press("Enter")  # the searchable multiselect takes the first match
        page.wait_for_timeout(300)
    # Each pick gets a row with the default rating in the ratings table
    page.wait_for_function("el => el.innerText.includes('Fargo')", arg=panel.element_handle(), timeout=30_000)
    panel.get_by_role("button", name="Recommend").first.click()
    # the same request in this process: its top recommendation must show in the browser
    ids = [next(i for name, i in tab.movie_choices() if name.startswith(p)) for p in PICKS]
    top = tab.recommend_visitor(ids, tab.ratings_table(ids), "bpr", 10)
    page.wait_for_function("([el, title]) => el.innerText.includes(title)",
                           arg=[panel.element_handle(), top[0][1]], timeout=60_000)
    page.wait_for_timeout(500)
    results = panel.inner_text().split("because you liked", 1)[1]
    assert all(row[1] in results for row in top)
    assert any(p in results for p in PICKS)  # the reasons cite the visitor's own picks
    assert not page.locator(".toast-body.error").count()
    save_screenshot(page, "recommend")
