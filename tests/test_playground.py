"""The playground page in a real headless browser (Debian's chromium driven by Playwright): generate streams, stop
cancels on the server, a template run shows its answer and scores, API errors read as plain words. A screenshot of
each state is written under the test's temporary folder."""

from __future__ import annotations

import os
import re
import shutil
import time

import httpx
import pytest

from .conftest import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="Debian's chromium (`.ci/run` installs it)")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is required in CI"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def until(page, expression: str, timeout: float = 30.0) -> None:
    """Wait until a JavaScript expression holds. Polled from here with `evaluate`: Playwright's `wait_for_function`
    compiles its predicate with `new Function`, which the page's Content-Security-Policy (no 'unsafe-eval') forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, expression
        time.sleep(0.02)


def _page(browser, url: str, width: int = 1200, height: int = 900, **options):
    page = browser.new_page(viewport={"width": width, "height": height}, **options)
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(url + "/")  # `/` redirects to the playground
    assert page.url.endswith("/playground")
    until(page, "document.querySelectorAll('[data-testid=model] option').length > 0")
    assert not violations, violations  # the page's own script runs under its CSP, and asks for nothing it forbids
    return page


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))


def test_generate_streams_coloured_tokens_after_the_prompt(browser, gateway, tmp_path):
    page = _page(browser, gateway.url)
    assert page.locator("[data-testid=model] option").count() == 2  # both shipped models
    for model, prompt in (("glotta-fr-tiny", "Le noyau Linux "), ("glotta-es-tiny", "El sistema ")):
        page.select_option("[data-testid=model]", model)
        page.fill("[data-testid=prompt]", prompt)
        page.fill("[data-testid=max-tokens]", "24")
        page.fill("[data-testid=temperature]", "0")
        page.click("[data-testid=generate]")
        until(page, "!document.querySelector('[data-testid=generate]').disabled")
        output = page.locator("[data-testid=output]")
        assert output.inner_text().startswith(prompt)
        tokens = output.locator(".tok")
        assert tokens.count() > 3 and output.inner_text() != prompt
        probs = [float(p) for p in tokens.evaluate_all("els => els.map(e => e.dataset.prob)")]
        assert all(0 < p <= 1 for p in probs)
        assert "%" in tokens.first.get_attribute("data-alternatives")  # the hover shows probabilities
        page.screenshot(path=str(tmp_path / f"generate-{model}.png"))
    greedy = httpx.post(gateway.url + "/v1/completions", json={"model": "glotta-es-tiny", "prompt": "El sistema ",
                                                               "max_tokens": 24, "temperature": 0}).json()
    assert page.locator("[data-testid=output]").inner_text() == "El sistema " + greedy["choices"][0]["text"]


def test_stop_cancels_the_generation_on_the_server(browser, gateway, tmp_path):
    page = _page(browser, gateway.url)
    before = _metric(gateway.url, "glotta_cancelled_requests_total")
    page.fill("[data-testid=max-tokens]", "480")
    page.fill("[data-testid=temperature]", "0")  # greedy: the shipped model repeats itself, no early end of text
    page.fill("[data-testid=prompt]", "Le paquet")
    page.click("[data-testid=generate]")
    until(page, "document.querySelectorAll('[data-testid=output] .tok').length > 2")
    page.click("[data-testid=stop]")
    until(page, "document.querySelector('[data-testid=status]').textContent.startsWith('stopped')")
    page.screenshot(path=str(tmp_path / "stopped.png"))
    assert wait_for(lambda: _metric(gateway.url, "glotta_cancelled_requests_total") > before, 20)


def test_template_run_shows_answer_prompt_and_scores(browser, gateway, tmp_path):
    page = _page(browser, gateway.url)
    page.select_option("[data-testid=template]", "sentiment-fr")
    page.fill("[data-testid=input-text]", "Un film magnifique, je l'ai adoré.")
    page.fill("[data-testid=k]", "2")
    page.select_option("[data-testid=mode]", "score")
    page.click("[data-testid=run-template]")
    until(page, "document.querySelector('[data-testid=template-answer]').textContent.length > 0")
    answer = page.locator("[data-testid=template-answer]").inner_text()
    bars = page.locator("[data-testid=template-scores] .bar")
    labels = bars.evaluate_all("els => els.map(e => e.dataset.label)")
    assert bars.count() >= 2 and any(label in answer for label in labels)
    assert "Un film magnifique" in page.locator("[data-testid=template-prompt]").text_content()
    page.screenshot(path=str(tmp_path / "template.png"))
    page.select_option("[data-testid=template]", "nli-fr")  # other inputs, one field each
    assert page.locator("[data-testid=input-premise]").count() == 1
    assert page.locator("[data-testid=input-hypothesis]").count() == 1


def test_chat_for_models_with_a_chat_template(browser, chat_gateway, tmp_path):
    """The chat section is there for a model with a chat template, not for one without; two turns stream the
    assistant's answers, each what /v1/chat/completions answers the same conversation."""
    _, _, gw = chat_gateway
    page = _page(browser, gw.url)
    page.select_option("[data-testid=model]", "glotta-fr-tiny")
    assert page.locator("[data-testid=chat-section]").is_hidden()
    page.select_option("[data-testid=model]", "qwen2")
    assert page.locator("[data-testid=chat-section]").is_visible()
    page.fill("[data-testid=max-tokens]", "12")
    page.fill("[data-testid=temperature]", "0")
    conversation = []
    for turn in ("Bonjour ! Où est la gare ?", "Et la bibliothèque ?"):
        page.fill("[data-testid=chat-input]", turn)
        page.click("[data-testid=send]")
        n = len(conversation) // 2 + 1
        until(page, f"document.querySelectorAll('[data-testid=msg-assistant][data-done]').length === {n}")
        conversation.append({"role": "user", "content": turn})
        expected = httpx.post(gw.url + "/v1/chat/completions", json={
            "model": "qwen2", "messages": conversation, "max_tokens": 12, "temperature": 0}, timeout=60).json()
        answer = expected["choices"][0]["message"]["content"]
        assert page.locator("[data-testid=msg-assistant]").nth(n - 1).text_content() == answer
        conversation.append({"role": "assistant", "content": answer})
    page.screenshot(path=str(tmp_path / "chat.png"))


def test_api_errors_read_as_plain_words(browser, gateway, tmp_path):
    page = _page(browser, gateway.url)
    page.fill("[data-testid=max-tokens]", "100000")
    page.click("[data-testid=generate]")
    error = page.locator("[data-testid=error]")
    error.wait_for(state="visible")
    text = error.inner_text()
    assert text.startswith("The request was refused") and "longer than allowed" in text and "max_tokens" in text
    page.screenshot(path=str(tmp_path / "error.png"))


def test_api_key_is_sent_from_session_storage(browser, tmp_path):
    from .conftest import FR, REPO, Gateway

    gw = Gateway(["--model", FR, "--threads", "1", "--api-key", "s3cret"], tmp_path / "serve.log",
                 env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    try:
        page = browser.new_page()
        page.goto(gw.url + "/playground")  # the page itself is open; the API is not
        page.locator("[data-testid=error]").wait_for(state="visible")
        assert "needs an API key" in page.locator("[data-testid=error]").inner_text()
        page.fill("[data-testid=api-key]", "s3cret")
        page.dispatch_event("[data-testid=api-key]", "change")
        until(page, "document.querySelectorAll('[data-testid=model] option').length > 0")
        assert page.evaluate("sessionStorage.getItem('glotta-api-key')") == "s3cret"
        page.fill("[data-testid=max-tokens]", "4")
        page.click("[data-testid=generate]")
        until(page, "document.querySelectorAll('[data-testid=output] .tok').length > 0")
        assert not page.locator("[data-testid=error]").is_visible()
    finally:
        gw.stop()


def test_works_through_triton(browser, triton_gateway, tmp_path):
    page = _page(browser, triton_gateway.url)
    page.fill("[data-testid=max-tokens]", "16")
    page.fill("[data-testid=temperature]", "0")
    page.fill("[data-testid=prompt]", "Le noyau ")
    page.click("[data-testid=generate]")
    until(page, "!document.querySelector('[data-testid=generate]').disabled")
    assert page.locator("[data-testid=output] .tok").count() > 2
    assert "triton" in page.locator("[data-testid=model]").inner_text()
    page.screenshot(path=str(tmp_path / "triton.png"))


OVERFLOW = """() => {
  const w = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter((e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && getComputedStyle(e).position !== 'fixed' && (r.right > w + 1 || r.left < -1);
  }).map((e) => e.tagName + (e.id ? '#' + e.id : '') + ' ' + Math.round(e.getBoundingClientRect().right));
  return {scroll: document.documentElement.scrollWidth, width: w, wide};
}"""


@pytest.mark.parametrize("width", [360, 400])
def test_phone_viewport_fits_and_keyboard_alone_drives_it(browser, gateway, tmp_path, width):
    """At a phone's width nothing is wider than the screen (before and after text, bars and errors appear); with
    the keyboard alone: Tab reaches the prompt and then Generate, Enter generates, Escape stops."""
    page = _page(browser, gateway.url, width, 760, is_mobile=True, has_touch=True, device_scale_factor=2)

    def fits(state: str) -> None:
        o = page.evaluate(OVERFLOW)
        assert o["scroll"] <= o["width"] and not o["wide"], (state, o)

    fits("loaded")
    page.locator("body").focus()
    order = []
    for _ in range(8):  # model, API key, prompt: the page's order is the reading order
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.dataset.testid || document.activeElement.id"))
        if order[-1] == "prompt":
            break
    assert order[-1] == "prompt" and order.index("model") < order.index("prompt"), order
    page.keyboard.press("Control+A")
    page.keyboard.type("Le paquet")
    page.keyboard.press("Shift+Enter")  # a new line, not a request
    assert page.input_value("[data-testid=prompt]") == "Le paquet\n" and page.locator(".tok").count() == 0
    page.keyboard.press("Backspace")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.testid") == "generate"
    page.keyboard.press("Shift+Tab")
    page.fill("[data-testid=max-tokens]", "480")
    page.fill("[data-testid=temperature]", "0")
    page.focus("[data-testid=prompt]")
    page.keyboard.press("Enter")
    until(page, "document.querySelectorAll('[data-testid=output] .tok').length > 0")
    page.keyboard.press("Escape")
    until(page, "document.querySelector('[data-testid=status]').textContent.startsWith('stopped')")
    assert page.input_value("[data-testid=prompt]") == "Le paquet"
    fits("generated")
    page.select_option("[data-testid=template]", "sentiment-fr")
    page.fill("[data-testid=input-text]", "Un film magnifique, je l'ai adoré.")
    page.select_option("[data-testid=mode]", "score")
    page.focus("[data-testid=input-text]")
    page.keyboard.press("Enter")  # Enter in a template input runs the template
    until(page, "document.querySelectorAll('[data-testid=template-scores] .bar').length >= 2")
    fits("template scores")
    page.fill("[data-testid=max-tokens]", "100000")
    page.click("[data-testid=generate]")
    page.locator("[data-testid=error]").wait_for(state="visible")
    fits("error")
    page.screenshot(path=str(tmp_path / f"phone-{width}.png"), full_page=True)


def test_empty_answers_are_said(browser, tmp_path):
    """A generation of no text and a template whose answer is empty say so instead of showing nothing. The template
    stops at a space, a comma or a full stop, with which the demo model's answer begins: an empty answer from the
    real server."""
    from .conftest import FR, REPO, Gateway

    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "first-word-fr.yaml").write_text(
        "name: first-word-fr\ntask: translation\nlanguage: fr\nmode: generate\n"
        "pattern: '{{ source }} => {{ answer }}'\ninputs: [source]\nmax_tokens: 4\nstop: [' ', ',', '.']\n")
    gw = Gateway(["--model", FR, "--threads", "1", "--templates", str(tmp_path / "tpl")], tmp_path / "serve.log",
                 env={"GLOTTA_MODEL_REPOSITORY": str(REPO)})
    try:
        expected = httpx.post(gw.url + "/v1/templates/first-word-fr/run", json={"inputs": {"source": "cheese"}},
                              timeout=60).json()
        assert expected["answer"] == "", expected  # the premise of this test
        page = _page(browser, gw.url)
        page.select_option("[data-testid=template]", "first-word-fr")
        page.fill("[data-testid=input-source]", "cheese")
        page.click("[data-testid=run-template]")
        until(page, "document.querySelector('[data-testid=template-answer]').textContent.length > 0")
        answer = page.locator("[data-testid=template-answer]")
        assert "answer is empty" in answer.inner_text() and answer.get_attribute("data-empty") == "1"
        page.fill("[data-testid=max-tokens]", "0")
        page.click("[data-testid=generate]")
        until(page, "document.querySelector('[data-testid=status]').textContent.startsWith('no text generated')")
        assert page.locator("[data-testid=output] [data-empty='1']").count() == 1
        page.screenshot(path=str(tmp_path / "empty.png"))
    finally:
        gw.stop()
