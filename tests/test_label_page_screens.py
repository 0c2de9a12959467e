"""The labeling page in a real headless Chromium, beyond the laptop: a phone, offline API docs, messages, undo.

Each test runs ``activestream label serve`` as its own process on the embedded broker
(the ``served`` fixture of ``test_label_browser.py``: a token for alice, 22 digits
waiting). Screenshots land in the test's tmp folder.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from activestream.storage.store import SampleStore
from label_helpers import CLASSES
from test_label_browser import CHROMIUM, CLASS_KEYS, read_labels, served  # noqa: F401 (served: the fixture)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]

PHONE = {"width": 390, "height": 844}
WAIT_MS = 30_000  # a busy 2-core machine: waiting longer is not a timed assertion


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page, url: str, token: str) -> None:
    from playwright.sync_api import expect

    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    expect(page.locator("#token-help")).to_contain_text("activestream label token create")
    page.fill("#token", token)
    page.press("#token", "Enter")
    expect(page.locator("#who")).to_have_text("alice")


def settled(page) -> str:
    """The id of the item on screen once the page is idle, its image decoded."""
    from playwright.sync_api import expect

    shown = page.locator("#item-id")
    expect(shown).not_to_have_text("")
    expect(page.locator("body:not([data-busy])")).to_have_count(1)
    item = shown.inner_text()
    expect(page.locator("#image")).to_have_attribute("data-item", item)
    return item


def test_on_a_phone_the_panel_goes_under_the_image_and_a_tap_answers(served, tmp_path):
    from playwright.sync_api import expect

    settings, url, token = served
    last = len(CLASSES) - 1
    with chromium() as browser:
        page = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
        sign_in(page, url, token)
        item = settled(page)
        image, panel = page.locator("#image").bounding_box(), page.locator("#panel").bounding_box()
        page.screenshot(path=str(tmp_path / "labeling-phone.png"), full_page=True)
        assert image["width"] >= 300, image
        assert panel["y"] >= image["y"] + image["height"] - 1, (image, panel)  # under the image, not beside it
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing cut at the side
        page.locator(f'#classes button[data-label="{last}"]').tap()  # the last class: scrolled to, then tapped
        expect(page.locator("#item-id")).not_to_have_text(item)
        expect(page.locator("#previous-text")).to_contain_text(f"{item}: {CLASSES[last]}")
    assert [(m.id, m.label, m.labeler) for m in read_labels(settings.bootstrap, settings.topic_labels, 1)] == [
        (item, last, "alice")]
    assert (tmp_path / "labeling-phone.png").stat().st_size > 10_000


def test_the_api_docs_render_with_the_network_blocked(served, tmp_path):
    from playwright.sync_api import expect

    _, url, _ = served
    blocked: list[str] = []

    def local_only(route):
        target = urlsplit(route.request.url)
        if target.scheme in ("http", "https") and target.hostname != "127.0.0.1":
            blocked.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.set_default_timeout(WAIT_MS)
        page.route("**/*", local_only)
        page.goto(f"{url}/docs")
        expect(page.locator(".opblock-summary-description", has_text="Lease the next item")).to_be_visible()
        expect(page.locator(".opblock-summary-description", has_text="Reopen my last answer")).to_be_visible()
        page.screenshot(path=str(tmp_path / "docs-offline.png"), full_page=True)
        assert blocked == []  # Swagger UI asked nothing of the internet
        page.goto(f"{url}/redoc")
        expect(page.get_by_role("heading", name="Reopen my last answer; label it again to correct it").first
               ).to_be_visible()
        page.screenshot(path=str(tmp_path / "redoc-offline.png"))
    # ReDoc always asks its CDN for the footer's logo, and hides it when that fails; nothing else.
    assert all(urlsplit(u).path.endswith("/logo-mini.svg") for u in blocked), blocked
    assert (tmp_path / "docs-offline.png").stat().st_size > 10_000


def test_messages_stay_until_the_next_key_and_undo_shows_the_earlier_answer(served, tmp_path):
    from playwright.sync_api import expect

    settings, url, token = served
    # GET /api/stats as served, with the broker's state set by the test when it says so.
    report: dict = {"broker": None}

    def stats(route):
        response = route.fetch()
        body = response.json()
        if report["broker"] is not None:
            body["broker"] = report["broker"]
        route.fulfill(response=response, json=body)

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.route("**/api/stats", stats)
        sign_in(page, url, token)
        message, correction, banner = page.locator("#message"), page.locator("#correction"), page.locator("#broker")
        chosen = page.locator("#classes button.chosen")
        expect(page.locator("#s-gold")).to_have_text("no gold items yet")  # not "– of 0"
        expect(page.locator("#stats .hint").first).to_be_visible()

        first = settled(page)
        page.keyboard.press("z")                               # nothing to undo yet: 404
        expect(message).to_contain_text("no answer to undo")
        assert settled(page) == first
        page.wait_for_timeout(1500)                            # a reader's pause; the message must not go
        expect(message).to_contain_text("no answer to undo")

        page.keyboard.press(CLASS_KEYS[3])                     # the next key clears it
        second = settled(page)
        assert second != first
        expect(message).to_have_text("")

        page.keyboard.press("z")                               # undo: the earlier answer is shown
        expect(page.locator("#item-id")).to_have_text(first)
        expect(correction).to_contain_text(f"you answered \u201c{CLASSES[3]}\u201d before")
        expect(chosen).to_have_count(1)
        expect(chosen).to_have_attribute("data-label", "3")

        page.keyboard.press("s")                               # a labeled item cannot be skipped: 409
        expect(message).to_contain_text("already has your label")
        assert settled(page) == first
        page.wait_for_timeout(1500)
        expect(message).to_contain_text("already has your label")
        expect(correction).to_be_visible()                     # still the same correction
        page.screenshot(path=str(tmp_path / "labeling-correction.png"))

        report["broker"] = {"up": False, "waiting": 2}
        page.keyboard.press(CLASS_KEYS[5])                     # the correction; stats refresh after an answer
        assert settled(page) == second
        expect(message).to_have_text("")
        expect(correction).to_be_hidden()
        expect(chosen).to_have_count(0)
        expect(page.locator("#previous-text")).to_contain_text(f"{first}: {CLASSES[5]} (was {CLASSES[3]})")
        expect(banner).to_have_text("The loop's broker is unreachable: your answers are kept and sent "
                                    "when it is back (2 waiting).")

        page.keyboard.press("s")                               # an undone skip: the page says so
        third = settled(page)
        report["broker"] = {"up": True, "waiting": 0}
        page.keyboard.press("z")
        expect(page.locator("#item-id")).to_have_text(second)
        expect(correction).to_contain_text("skipped this item before")
        expect(chosen).to_have_count(0)
        expect(banner).to_be_hidden()
        page.keyboard.press(CLASS_KEYS[7])
        assert settled(page) == third

    undone = httpx.post(f"{url}/api/undo", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    assert undone["item"]["id"] == second and undone["previous"] == {"label": 7, "name": CLASSES[7]}
    sent: dict[str, list[int]] = {}
    for m in read_labels(settings.bootstrap, settings.topic_labels, expected=3):
        sent.setdefault(m.id, []).append(m.label)   # in order per item (keyed by id: one partition)
    assert sent == {first: [3, 5], second: [7]}
    store = SampleStore(settings.store)
    assert [(lab.label, lab.labeler) for lab in store.labels_for(first)] == [(5, "alice")]
    store.close()
