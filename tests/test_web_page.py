"""The page ``ddpg serve`` ships at ``GET /``, in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real ``ddpg serve`` process (face64 on the CPU, a bearer
token, a few steps): the token field, the form filled from ``/v1/models``, a bad setting's message beside its
field, cancelling a queued and a running job, and a job followed to its last step whose downloaded PNG equals
its ``ddpg restore`` twin and whose comparison offers its observation and the upload; the form readable and
usable by keyboard at phone width.

One browser and one server serve every test. No test waits on timing: the engine is held at a tick boundary
with the server's test hook (``POST /test/pause``) where a job must stay queued or running, and every wait is
for a state the page shows. Where no browser can be driven the whole module skips with a reason naming what
is missing and how to install it (``pytest -ra`` lists it)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ddpg.samples import sample_path
from headless_chromium import console_errors, missing_browser, start_chromium

REASON = missing_browser()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from serve_process import TOKEN, WAIT_S, ServerProcess, twin_png  # noqa: E402

STEPS = 4
LONG = 200  # steps of a job cancelled while it runs: far more than run in the moment it takes to hold the engine
PHONE = (375, 812)  # CSS pixels


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page-serve")
    (tmp / "token").write_text(TOKEN + "\n")
    # one thread, as the twin restores in this process (conftest): another count rounds the UNet's convolutions
    # differently (one value of 12,288 one level apart for this job at 2 threads)
    proc = ServerProcess(tmp, "--prior", "face64", "--threads", "1", "--max-batch", "2",
                         "--token-file", str(tmp / "token"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    driver = start_chromium(downloads, *PHONE)
    yield driver
    driver.quit()


def wait_for(browser, condition, what: str):
    """``condition(browser)``'s first truthy value; fails naming ``what`` after WAIT_S seconds."""
    return WebDriverWait(browser, WAIT_S, poll_frequency=0.05).until(condition, message=f"waiting for {what}")


def by_id(browser, name: str):
    return browser.find_element(By.ID, name)


@pytest.fixture
def page(browser, server):
    """The page loaded afresh in a new tab session (no token stored), the token typed where it asks for one."""
    browser.get(server.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(server.url + "/")
    wait_for(browser, lambda b: by_id(b, "token-row").is_displayed(), "the token field")
    by_id(browser, "token").send_keys(TOKEN, Keys.TAB)
    wait_for(browser, lambda b: len(Select(by_id(b, "task")).options) > 0, "the tasks from /v1/models")
    yield browser
    assert console_errors(browser) == []


def fill(browser, image: Path | None = sample_path(), **fields) -> None:
    """Pick ``image`` (default the bundled sample face; None: the one already picked) and set the form's fields (a
    select by its option's value)."""
    if image is not None:
        by_id(browser, "image").send_keys(str(image))
    for name, value in fields.items():
        element = by_id(browser, name)
        if element.tag_name == "select":
            Select(element).select_by_value(str(value))
        else:
            element.clear()
            element.send_keys(str(value))


def job_state(browser) -> tuple[str | None, str | None]:
    view = by_id(browser, "job-state")
    return view.get_attribute("data-state"), view.get_attribute("data-job-id")


def wait_state(browser, state: str) -> str:
    """The job id once the page shows the job in ``state``."""
    wait_for(browser, lambda b: job_state(b)[0] == state, f"the job {state}")
    return job_state(browser)[1]


def api(server, method: str, path: str, **kwargs) -> httpx.Response:
    """A call to the server's API with its token (``headers`` replaces it)."""
    return httpx.request(method, server.url + path, **{"headers": server.headers, "timeout": WAIT_S, **kwargs})


def test_token_field_and_form_follow_the_servers_models(browser, server):
    browser.get(server.url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(server.url + "/")
    wait_for(browser, lambda b: by_id(b, "token-row").is_displayed(), "the token field")
    assert "token" in by_id(browser, "server-info").text
    by_id(browser, "token").send_keys("wrong", Keys.TAB)
    wait_for(browser, lambda b: by_id(b, "error-token").text, "the token's error")
    assert by_id(browser, "error-token").text == api(server, "GET", "/v1/models", headers={}).json()["error"]
    by_id(browser, "token").clear()
    by_id(browser, "token").send_keys(TOKEN, Keys.TAB)
    model = api(server, "GET", "/v1/models").json()["models"][0]
    wait_for(browser, lambda b: not by_id(b, "error-token").text, "the token accepted")
    assert [o.get_attribute("value") for o in Select(by_id(browser, "task")).options] == model["tasks"]
    assert [o.get_attribute("value") for o in Select(by_id(browser, "method")).options] == model["methods"]
    Select(by_id(browser, "task")).select_by_value("sr4")
    Select(by_id(browser, "method")).select_by_value("ddrm")
    defaults = model["defaults"]["ddrm"]["sr4"]
    assert by_id(browser, "steps").get_attribute("placeholder") == str(defaults["steps"])
    assert float(by_id(browser, "sigma_y").get_attribute("placeholder")) == defaults["sigma_y"]
    assert browser.execute_script("return sessionStorage.getItem('ddpg-token')") == TOKEN
    assert console_errors(browser) == []


@pytest.mark.parametrize("field, value", [("steps", 100000), ("sigma_y", -1)])
def test_a_bad_setting_shows_the_servers_message_beside_its_field(page, server, field, value):
    fill(page, task="sr4", method="ddpg", **{field: value})
    by_id(page, "submit").click()
    wait_for(page, lambda b: by_id(b, f"error-{field}").text, f"the message beside {field}")
    expected = api(server, "POST", "/v1/jobs", data={"task": "sr4", "method": "ddpg", "seed": "0", field: str(value)},
                   files={"image": (sample_path().name, sample_path().read_bytes(), "image/png")})
    assert expected.status_code == 422 and expected.json()["field"] == field
    assert by_id(page, f"error-{field}").text == expected.json()["error"]
    assert by_id(page, field).get_attribute("aria-invalid") == "true"
    assert page.switch_to.active_element == by_id(page, field)
    assert by_id(page, "error-general").text == "" and by_id(page, "job").is_displayed() is False


@pytest.mark.parametrize("held", ["queued", "running"])
def test_cancel_a_queued_or_running_job(page, server, held):
    """The engine is held before the job is admitted (queued) or after its first step (running)."""
    steps = STEPS if held == "queued" else LONG
    fill(page, task="sr4", method="ddpg", steps=steps)
    if held == "queued":
        server.pause(True)
    by_id(page, "submit").click()
    try:
        if held == "running":
            wait_for(page, lambda b: int(by_id(b, "progress").get_attribute("value")) >= 1, "the first step")
            server.pause(True)
        job = wait_state(page, held)
        if held == "queued":
            assert "position 1" in by_id(page, "job-state").text
        assert by_id(page, "cancel").is_enabled() and not by_id(page, "submit").is_enabled()
        by_id(page, "cancel").send_keys(Keys.ENTER)  # the keyboard's way to press it
        wait_state(page, "cancelled")
    finally:
        server.pause(False)
    status = api(server, "GET", f"/v1/jobs/{job}").json()
    assert status["state"] == "cancelled" and status["step"] < steps
    assert by_id(page, "submit").is_enabled() and not by_id(page, "cancel").is_enabled()
    assert not by_id(page, "result").is_displayed()


def test_a_job_runs_to_its_last_step_and_its_download_equals_the_restore_twin(page, server, downloads, tmp_path):
    fill(page, task="sr4", method="ddpg", steps=STEPS, seed=3)
    page.execute_script("""window.seenSteps = [];
        new MutationObserver(() => window.seenSteps.push(Number(document.getElementById('progress').value)))
          .observe(document.getElementById('progress'), {attributes: true, attributeFilter: ['value']});""")
    by_id(page, "submit").click()
    job = wait_state(page, "done")
    seen = [s for s in page.execute_script("return window.seenSteps") if s > 0]
    assert seen == sorted(seen) and seen[-1] == STEPS, seen
    assert page.find_element(By.ID, "progress").get_attribute("max") == str(STEPS)
    preview = by_id(page, "preview").get_attribute("src")
    assert preview.startswith("data:image/png;base64,")
    assert max(Image.open(io.BytesIO(base64.b64decode(preview.split(",", 1)[1]))).size) <= 128
    wait_for(page, lambda b: by_id(b, "result").is_displayed(), "the result")
    sidecar = api(server, "GET", f"/v1/jobs/{job}/result", params={"format": "json"}).json()["sidecar"]
    shown = dict(zip([e.text for e in page.find_elements(By.CSS_SELECTOR, "#metrics dt")],
                     [e.text for e in page.find_elements(By.CSS_SELECTOR, "#metrics dd")], strict=True))
    assert float(shown["psnr"]) == pytest.approx(sidecar["metrics"]["psnr"], abs=1e-4)
    assert shown["steps"] == str(STEPS) and shown["seed"] == "3"
    check_the_comparisons_two_choices(page, server, job)
    by_id(page, "compare-slider").send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)  # the line moves by keyboard
    assert page.execute_script("return document.getElementById('compare').style.getPropertyValue('--pos')") == "52%"
    by_id(page, "download").click()
    restored = downloads / f"{sample_path().stem}_restored.png"
    wait_for(page, lambda b: restored.exists() and restored.stat().st_size > 0, "the download")
    served = api(server, "GET", f"/v1/jobs/{job}/result").content
    assert restored.read_bytes() == served
    twin = twin_png(sample_path(), tmp_path / "twin", "--prior", "face64", "--task", "sr4", "--method", "ddpg",
                    "--steps", str(STEPS), "--seed", "3")
    assert served == twin


def shown_before(browser) -> tuple[bytes, int, str, str]:
    """(the bytes of the image left of the comparison's line, its width in pixels, the slider's label, the
    corner tag) once that image has loaded."""
    wait_for(browser, lambda b: b.execute_script("return document.getElementById('before').complete"),
             "the image left of the line")
    data = browser.execute_async_script("""const done = arguments[arguments.length - 1];
        fetch(document.getElementById('before').src).then(r => r.arrayBuffer()).then(buffer => {
          let text = ''; for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
          done(btoa(text)); });""")
    return (base64.b64decode(data), browser.execute_script("return document.getElementById('before').naturalWidth"),
            by_id(browser, "compare-label").text, by_id(browser, "before-tag").text)


def check_the_comparisons_two_choices(browser, server, job: str) -> None:
    """A clean upload's comparison offers the observation the restoration started from (first: the server's
    observation PNG, 16 px for sr4 of the 64-px face, enlarged with square pixels) and the upload itself;
    the arrow keys switch between them, and the slider's label and the corner tag name the one shown."""
    observed = api(server, "GET", f"/v1/jobs/{job}/observed").content
    assert by_id(browser, "compare-observed").is_selected() and by_id(browser, "choice-original").is_displayed()
    assert shown_before(browser) == (observed, 16, "Observed ◀ ▶ restored", "observed")
    before = by_id(browser, "before")
    assert before.value_of_css_property("image-rendering") == "pixelated" and before.size["width"] >= 4 * 64
    assert "16×16 pixels" in by_id(browser, "compare-help").text
    by_id(browser, "compare-observed").send_keys(Keys.ARROW_DOWN)  # the next choice, by keyboard
    assert by_id(browser, "compare-original").is_selected()
    assert shown_before(browser) == (sample_path().read_bytes(), 64, "Original ◀ ▶ restored", "original")
    assert "measured the metrics against" in by_id(browser, "compare-help").text


def test_an_observation_is_drawn_over_the_pixels_it_measured(page, server, tmp_path):
    """A 66-px upload, SR ×4: its observation has ceil(66 / 4) = 17 pixels a side, which measured 68 image
    pixels, so stretched over the 66-px restoration each would drift by up to 2 pixels. The page draws it 68/66 of
    the box wide and high and clips the 2 px that lie past the image; the clean upload fills the box as before."""
    image = tmp_path / "face66.png"
    with Image.open(sample_path()) as face:
        face.convert("RGB").resize((66, 66)).save(image)
    fill(page, image, task="sr4", method="ddpg", steps=2, seed=0)
    by_id(page, "submit").click()
    wait_state(page, "done")
    wait_for(page, lambda b: by_id(b, "result").is_displayed(), "the result")
    assert shown_before(page)[1] == 17
    box, before = by_id(page, "compare").rect, by_id(page, "before")
    inner = box["width"] - 2  # inside its 1-px border
    assert before.rect["width"] == pytest.approx(inner * 68 / 66, abs=0.5)
    assert before.rect["height"] == pytest.approx(inner * 68 / 66, abs=0.5)
    assert (before.rect["x"], before.rect["y"]) == pytest.approx((box["x"] + 1, box["y"] + 1), abs=0.5)
    clip = before.value_of_css_property("clip-path")  # e.g. inset(0px 2.9412% 2.9412% 0px)
    assert [float(v.rstrip("px%")) for v in clip[len("inset("):-1].split()] == pytest.approx(
        [0, 100 * 2 / 68, 100 * 2 / 68, 0], abs=1e-3)
    by_id(page, "compare-original").click()
    wait_for(page, lambda b: shown_before(b)[1] == 66, "the upload left of the line")
    assert before.rect["width"] == pytest.approx(inner, abs=0.5)
    assert before.value_of_css_property("clip-path") == "none"


def test_an_image_dropped_on_the_zone_is_the_one_sent(page, server):
    """A drop (a synthetic drag-and-drop event carrying the sample face) picks the image; a bad setting's 422
    names the field, so the image was read and accepted."""
    page.execute_script("""const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const dropped = new DataTransfer();
        dropped.items.add(new File([bytes], arguments[1], {type: 'image/png'}));
        document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: dropped}));""",
                        base64.b64encode(sample_path().read_bytes()).decode(), "dropped.png")
    assert by_id(page, "drop-text").text.startswith("dropped.png")
    assert by_id(page, "picked").is_displayed()
    by_id(page, "steps").send_keys("100000")
    by_id(page, "submit").click()
    wait_for(page, lambda b: by_id(b, "error-steps").text, "the message beside steps")
    assert by_id(page, "error-image").text == ""


def test_readable_at_phone_width_with_labels_and_visible_focus(page, server):
    fill(page)
    loaded = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert {u.split("/")[2] for u in loaded} == {server.url.split("/")[2]}, loaded  # nothing from elsewhere
    widths = page.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1] == PHONE[0], widths  # nothing wider than the phone's screen
    unlabelled = page.execute_script("""return [...document.querySelectorAll('input, select, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
        .map(e => e.id);""")
    assert unlabelled == []
    shown_hidden = page.execute_script("""return ['token-row', 'picked', 'job', 'preview-figure', 'result']
        .filter(id => { const e = document.getElementById(id), was = e.hidden; e.hidden = true;
                        const shown = getComputedStyle(e).display !== 'none'; e.hidden = was; return shown; });""")
    assert shown_hidden == []  # what the page hides stays hidden, whatever its style's display
    page.execute_script("document.getElementById('token').focus()")
    order = ["token", "image", "task", "method", "sigma_y", "steps", "seed", "observed", "submit"]  # Cancel: disabled
    reached = []
    for _ in order:  # Tab walks the form in order, and each control shows its focus (the file input's on its zone)
        element = page.switch_to.active_element
        reached.append(element.get_attribute("id"))
        shown = by_id(page, "drop-zone") if reached[-1] == "image" else element
        assert shown.value_of_css_property("outline-style") != "none", reached
        ActionChains(page).send_keys(Keys.TAB).perform()  # to whatever has the focus, as a person's Tab
    assert reached == order
