"""The labeling app in a real browser: headless Chromium, real shared images, real MobileSAM.

On a JSRT X-ray, add and remove clicks, a brush stroke, an eraser stroke, undo / redo and the
opacity slider go through the page's own mouse and keyboard handling; the saved PNG must then
show what the actions say. On a CT volume, the slice slider and keys, a window preset, a box and
a brush stroke end in a NIfTI mask with the source's geometry. ``S2UNET_SCREENSHOT=1`` also
writes the README's screenshot (docs/label_app.png) from the CT case, whose licence (CC BY 4.0)
allows showing it; the JSRT terms do not.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import shared_root


REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CASE = "JPCLN001"
# Image pixels (x, y) on JPCLN001 (512 x 512): inside the right lung (image left), between the
# lungs (spine / mediastinum), inside the left lung, and two strips away from the lungs.
ADD_RIGHT, REMOVE_MIDDLE, ADD_LEFT = (150, 250), (256, 300), (360, 250)
PAINT = [(30, 470), (90, 470)]  # bottom-left corner, below the lungs
ERASE = [(130, 200), (170, 200)]  # across the right lung


def _browser_or_skip() -> None:
    reason = os.environ.get("S2UNET_BROWSER_UNAVAILABLE")
    if reason:  # .ci/run tried to install the browser and could not
        pytest.skip(f"no browser: {reason}")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        message = f"browser test needs {', '.join(missing)} (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs them, so in CI this is an error")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Start the app on a free loopback port for some files or series folders (with the shared
    weights of the prompted model, unless ``prompted`` is None); returns (address, output folder)."""
    import uvicorn

    from s2unet.app import build_state, create_app

    _browser_or_skip()
    running: list[tuple[uvicorn.Server, threading.Thread, object]] = []

    def start(files: list[Path], labels: list[str], prompted: str | None = "mobilesam",
              token: str | None = None) -> tuple[str, Path]:
        if prompted is not None:
            monkeypatch.setenv("S2UNET_WEIGHTS", str(shared_root() / "weights"))
        images = tmp_path / "images"
        images.mkdir()
        for f in files:
            shutil.copytree(f, images / f.name) if f.is_dir() else shutil.copy(f, images)
        out = tmp_path / "out"
        state = build_state(images, out, labels, prompted=prompted)
        assert state.problems == [] and (prompted is None or state.predictor is not None)
        port = _free_port()
        app = create_app(state, token, port)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread, state))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}/", out

    yield start
    for server, thread, state in running:
        server.should_exit = True
        thread.join(timeout=10)
        state.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator["object"]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,820", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _idle(driver, after: int = -1, timeout: float = 60.0) -> int:
    """Wait until the page has no request in flight and has finished more than ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy, version = driver.execute_script(
            "return [document.body.dataset.busy, Number(document.body.dataset.version || 0)]")
        if busy == "0" and version > after:
            return version
        time.sleep(0.05)
    raise AssertionError(f"page still busy after {timeout} s: {driver.find_element('id', 'message').text}")


def _act(driver, action) -> None:
    """Perform a page action and wait for its answer."""
    version = _idle(driver)
    action()
    _idle(driver, version)
    text = driver.find_element("id", "message")
    assert "error" not in (text.get_attribute("class") or ""), text.text


def _offset(canvas, xy: tuple[float, float]) -> tuple[int, int]:
    """Selenium offsets (from the canvas centre) of an image pixel."""
    scale = float(canvas.get_attribute("data-scale"))
    w, h = canvas.size["width"], canvas.size["height"]
    return round((xy[0] + 0.5) * scale - w / 2), round((xy[1] + 0.5) * scale - h / 2)


def _drag(driver, canvas, points: list[tuple[float, float]]) -> None:
    """Press, move through the points (with intermediate moves, as a hand makes) and release."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver).move_to_element_with_offset(canvas, *_offset(canvas, points[0])).click_and_hold()
    for a, b in zip(points, points[1:]):
        for t in np.linspace(0, 1, 8)[1:]:
            p = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
            chain.move_to_element_with_offset(canvas, *_offset(canvas, p))
    chain.release().perform()


def _canvas_picture(driver, width: int, height: int) -> np.ndarray:
    """The red channel of the canvas at every image pixel's centre, (height, width)."""
    values = driver.execute_script(
        "const c = document.getElementById('canvas'); const s = Number(c.dataset.scale);"
        "const g = c.getContext('2d'); const out = [];"
        "for (let y = 0; y < arguments[1]; y++) for (let x = 0; x < arguments[0]; x++)"
        " out.push(g.getImageData(Math.floor((x + 0.5) * s), Math.floor((y + 0.5) * s), 1, 1).data[0]);"
        "return out;", width, height)
    return np.asarray(values, dtype=np.float64).reshape(height, width)


def _page_mask(driver, width: int, height: int, layer: int = 0) -> np.ndarray:
    """The mask of a layer as the page holds it, (height, width) bool."""
    values = driver.execute_script("return Array.from(S.masks[arguments[0]]);", layer)
    return np.asarray(values).reshape(height, width) > 0


def _overlay_pixel(driver, xy: tuple[int, int]) -> list[int]:
    return driver.execute_script(
        "const c = document.getElementById('canvas'); const s = Number(c.dataset.scale);"
        "return Array.from(c.getContext('2d').getImageData(Math.floor((arguments[0] + 0.5) * s),"
        " Math.floor((arguments[1] + 0.5) * s), 1, 1).data);", *xy)


@pytest.mark.shared
def test_label_a_real_xray_in_the_browser(serve, shared_dir: Path, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, out = serve([shared_dir / "data" / "cxr_jsrt_scr" / "images" / f"{CASE}.png"], ["lungs"])
    driver = browser
    driver.get(url)
    _idle(driver, 0)
    canvas = driver.find_element(By.ID, "canvas")
    assert canvas.get_attribute("data-width") == "512", driver.find_element(By.ID, "message").text

    def click(xy: tuple[int, int], add: bool) -> None:
        chain = ActionChains(driver).move_to_element_with_offset(canvas, *_offset(canvas, xy))
        (chain.click() if add else chain.context_click()).perform()

    def drag(points: list[tuple[int, int]]) -> None:
        _drag(driver, canvas, points)

    _act(driver, lambda: click(ADD_RIGHT, add=True))
    _act(driver, lambda: click(REMOVE_MIDDLE, add=False))
    right_lung = _page_mask(driver, 512, 512)
    _act(driver, lambda: click(ADD_LEFT, add=True))
    # The other lung is a new object: the first one's pixels stay, nothing floods between them.
    both = _page_mask(driver, 512, 512)
    np.testing.assert_array_equal(both & right_lung, right_lung)
    assert both[:, 256:].sum() > 1000 and not both[REMOVE_MIDDLE[1], REMOVE_MIDDLE[0]]

    driver.find_element(By.CSS_SELECTOR, "input[value=brush]").click()
    driver.execute_script("const s = document.getElementById('size'); s.value = 6; s.oninput();")
    _act(driver, lambda: drag(PAINT))
    driver.find_element(By.CSS_SELECTOR, "input[value=eraser]").click()
    _act(driver, lambda: drag(ERASE))
    # Undo brings the erased strip back, redo erases it again (keyboard shortcuts).
    _act(driver, lambda: ActionChains(driver).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform())
    restored = _overlay_pixel(driver, ERASE[0])
    _act(driver, lambda: driver.find_element(By.ID, "redo").click())

    before, erased = _overlay_pixel(driver, ADD_RIGHT), _overlay_pixel(driver, ERASE[0])
    driver.execute_script("const o = document.getElementById('opacity'); o.value = 90; o.oninput();")
    after = _overlay_pixel(driver, ADD_RIGHT)
    assert before != after, "the opacity slider did not change the drawn mask"
    assert restored != erased, "undo / redo did not change the erased strip"

    # Closing the tab loses nothing: a new tab on the app shows the unsaved edits as they were.
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    second = driver.current_window_handle
    driver.switch_to.window(first)
    driver.close()
    driver.switch_to.window(second)
    driver.get(url)
    _idle(driver, 0)
    assert (_overlay_pixel(driver, ADD_RIGHT), _overlay_pixel(driver, ERASE[0])) == (before, erased), \
        "a new tab does not show the edits made before the old one was closed"

    _act(driver, lambda: driver.find_element(By.ID, "save").click())
    assert "saved" in driver.find_element(By.ID, "message").text

    saved = np.asarray(Image.open(out / "masks" / "lungs" / f"{CASE}.png"))
    assert saved.dtype == np.uint8 and set(np.unique(saved)) <= {0, 255}
    assert saved[ADD_RIGHT[1], ADD_RIGHT[0]] == 255 and saved[ADD_LEFT[1], ADD_LEFT[0]] == 255
    assert saved[REMOVE_MIDDLE[1], REMOVE_MIDDLE[0]] == 0
    for x in range(PAINT[0][0], PAINT[1][0] + 1):
        assert saved[PAINT[0][1], x] == 255, f"painted pixel ({x}, {PAINT[0][1]}) not set"
    for x in range(ERASE[0][0], ERASE[1][0] + 1):
        assert saved[ERASE[0][1], x] == 0, f"erased pixel ({x}, {ERASE[0][1]}) still set"
    assert (out / "images" / f"{CASE}.png").is_file()
    record = json.loads((out / "label_log.jsonl").read_text().splitlines()[-1])
    assert (record["case"], record["clicks"], record["strokes"]) == (CASE, 3, 2)


CT_CASE = "case04"  # coronacases.org, CC BY 4.0 (the README's overlay shows the same volume)
# The slice with the most infection in case04: stored slice 51 of 116 (L-P-S), served slice
# 116 - 1 - 51 (served axial slices count from the head down).
CT_SLICE = 64
CT_BOX = (58, 130, 116, 184)  # around its largest lesion (display x0, y0, x1, y1)
CT_PAINT = [(30, 230), (60, 230)]


@pytest.mark.shared
def test_label_a_ct_volume_in_the_browser(serve, shared_dir: Path, browser) -> None:
    import nibabel as nib

    from s2unet.data import read_case
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    source = shared_dir / "data" / "ct_covid19_ma20" / "images" / f"{CT_CASE}.nii.gz"
    url, out = serve([source], ["infection"])
    driver = browser
    driver.get(url)
    _idle(driver, 0)
    canvas = driver.find_element(By.ID, "canvas")
    assert driver.find_element(By.ID, "volume-bar").is_displayed()
    driver.execute_script("const s = document.getElementById('slice'); s.value = arguments[0] - 1; s.oninput();",
                          CT_SLICE)
    _idle(driver)
    _act(driver, lambda: ActionChains(driver).send_keys(Keys.ARROW_UP).perform())  # the keys move too
    assert driver.find_element(By.ID, "slice-value").text == str(CT_SLICE)
    _act(driver, lambda: Select(driver.find_element(By.ID, "window")).select_by_value("none"))

    driver.find_element(By.CSS_SELECTOR, "input[value=box]").click()
    _act(driver, lambda: _drag(driver, canvas, [CT_BOX[:2], CT_BOX[2:]]))
    driver.find_element(By.CSS_SELECTOR, "input[value=brush]").click()
    _act(driver, lambda: _drag(driver, canvas, CT_PAINT))
    assert driver.find_element(By.ID, "labelled").is_selected()  # the edits marked their slice
    if os.environ.get("S2UNET_SCREENSHOT"):
        driver.save_screenshot(str(REPO / "docs" / "label_app.png"))
    # The slice below is reviewed and left empty: marked with the key, it is saved as labelled.
    _act(driver, lambda: ActionChains(driver).send_keys(Keys.ARROW_DOWN).perform())
    assert not driver.find_element(By.ID, "labelled").is_selected()
    _act(driver, lambda: ActionChains(driver).send_keys("l").perform())
    assert driver.find_element(By.ID, "labelled").is_selected()
    assert driver.find_element(By.ID, "labelled-count").text.startswith("2 of ")
    _act(driver, lambda: driver.find_element(By.ID, "save").click())

    manifest = json.loads((out / "labelled_slices.json").read_text())
    assert manifest == {"axis": 2, "reorient": True, "orientation": "radiological-v1",
                        "cases": {CT_CASE: [CT_SLICE - 1, CT_SLICE]}}
    saved = nib.load(out / "masks" / "infection" / f"{CT_CASE}.nii.gz")
    reference = nib.load(source)
    assert saved.shape == reference.shape
    np.testing.assert_allclose(saved.affine, reference.affine)
    mask = read_case(out / "masks" / "infection" / f"{CT_CASE}.nii.gz", "volume", True).get_array()
    assert set(np.unique(mask)) <= {0, 1}
    assert mask[:, :, np.arange(mask.shape[2]) != CT_SLICE].sum() == 0  # only the edited slice
    plane = mask[:, :, CT_SLICE].T  # display frame: rows, columns
    for x in range(CT_PAINT[0][0], CT_PAINT[1][0] + 1):
        assert plane[CT_PAINT[0][1], x] == 1, f"painted pixel ({x}, {CT_PAINT[0][1]}) not set"
    x0, y0, x1, y1 = CT_BOX
    assert plane[y0 : y1 + 1, x0 : x1 + 1].sum() > 50, "the box found nothing"
    outside = plane.copy()
    outside[y0 - 5 : y1 + 6, x0 - 5 : x1 + 6] = 0
    outside[CT_PAINT[0][1] - 10 : CT_PAINT[0][1] + 11] = 0  # the brush stroke's band
    assert outside.sum() == 0, "foreground away from the box and the stroke"


def test_the_token_moves_from_the_address_into_a_cookie(serve, tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    picture = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)).save(picture)
    url, _ = serve([picture], ["lungs"], prompted=None, token="s3cret-token")
    driver = browser
    driver.get(url + "?token=s3cret-token")
    _idle(driver, 0)
    assert driver.find_element(By.ID, "canvas").get_attribute("data-width") == "50", \
        driver.find_element(By.ID, "message").text
    assert driver.current_url == url  # gone from the address bar ...
    assert driver.execute_script("return window.location.search") == ""  # ... and the history entry
    driver.refresh()  # the cookie carries the token now
    _idle(driver, 0)
    assert driver.find_element(By.ID, "canvas").get_attribute("data-width") == "50", \
        driver.find_element(By.ID, "message").text
    driver.delete_all_cookies()
    driver.get(url)
    assert "access token required" in driver.page_source


def test_the_ask_box_is_hidden_without_a_text_model(serve, tmp_path: Path, browser) -> None:
    """`.group`'s display must not override the box's `hidden` attribute (issue 26)."""
    from selenium.webdriver.common.by import By

    picture = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)).save(picture)
    url, _ = serve([picture], ["lungs"], prompted=None)
    driver = browser
    driver.get(url)
    _idle(driver, 0)
    assert driver.find_element(By.ID, "canvas").get_attribute("data-width") == "50"
    assert driver.find_element(By.ID, "text-box").get_attribute("hidden") is not None
    assert not driver.find_element(By.ID, "text-box").is_displayed()
    assert not driver.find_element(By.ID, "phrase").is_displayed()
    assert not driver.find_element(By.ID, "volume-bar").is_displayed()


def test_the_app_shows_every_stored_form_anterior_up(serve, browser, tmp_path: Path) -> None:
    """A correctly tagged DICOM series, an LPS NIfTI and an RAS NIfTI of one scan are all shown as
    3D Slicer shows them: the spine at the bottom, the patient's right on the image's left."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from test_orientation import MARKER, NX, NY, SCAN, SPINE, write_scans

    scans = write_scans(tmp_path / "scans")
    url, _ = serve([scans[n] for n in ("dicom_series", "nifti_lps", "nifti_ras")], ["lesion"], prompted=None)
    driver = browser
    driver.get(url)
    _idle(driver, 0)
    expected = SCAN[:, :, 0].T.astype(np.float64)  # the displayed top slice, 0..255 (window "auto")
    shown = {}
    for case in ("series", "lps", "ras"):
        _act(driver, lambda: Select(driver.find_element(By.ID, "case")).select_by_value(case))
        driver.execute_script("const s = document.getElementById('slice'); s.value = 0; s.oninput();")
        _idle(driver)
        assert driver.find_element(By.ID, "slice-value").text == "0"
        picture = _canvas_picture(driver, NX, NY)
        rows, _ = np.nonzero(picture >= SPINE - 8)
        assert rows.size and rows.mean() > NY / 2, f"{case}: the spine is not at the bottom"
        _, cols = np.nonzero(np.abs(picture - MARKER) <= 8)
        assert cols.size and cols.mean() < NX / 2, f"{case}: the patient's right is not on the image's left"
        assert np.abs(picture - expected).max() <= 8, case
        shown[case] = picture
    assert np.abs(shown["series"] - shown["ras"]).max() <= 2 and np.abs(shown["lps"] - shown["ras"]).max() <= 2
