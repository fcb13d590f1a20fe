"""The harness the report and dashboard tests rely on: the page really renders, and a
console error really reaches console_errors() (so "no console errors" elsewhere means
something)."""

import urllib.parse

import browser_lib


def page(html: str) -> str:
    return "data:text/html;charset=utf-8," + urllib.parse.quote(html)


def test_renders_and_reads_the_dom(browser):
    browser.get(page("<html><body><svg><g class='step' data-step='a'></g>"
                     "<g class='step' data-step='b'></g></svg><p id='x'>hello &amp; bye</p></body></html>"))
    steps = browser.find_elements("css selector", "g.step")
    assert [s.get_attribute("data-step") for s in steps] == ["a", "b"]
    assert browser.find_element("id", "x").text == "hello & bye"
    assert browser_lib.console_errors(browser) == []


def test_console_errors_are_seen(browser):
    browser_lib.console_errors(browser)  # drain
    browser.get(page("<html><body><script>console.error('boom-42')</script></body></html>"))
    errors = browser_lib.console_errors(browser)
    assert any("boom-42" in e["message"] for e in errors), errors
    assert browser_lib.console_errors(browser) == []  # drained
