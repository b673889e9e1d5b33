"""The page at / in a real browser: Debian's headless Chromium driven by Selenium
through Debian's chromedriver (nothing is downloaded at test time; `make tools` and
.ci/run install both). A test image is uploaded through the page's file input; the class
the page shows must be the API's answer for the same file, and drawing on the canvas
must show a prediction with a bar for every class."""

from __future__ import annotations

import os
import shutil
import tempfile

import httpx
import numpy as np
import pytest
from PIL import Image

from .conftest import synthetic_images
from .servers import ServeProcess

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Without the background-networking flags, Chromium keeps calling out to hosts that this
# closed network refuses.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=900,700")  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("Chromium and chromedriver are missing: .ci/run installs them")
        pytest.skip("no Chromium: run `make tools` (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="mlptrain-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, timeout=20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_an_uploaded_image_shows_the_apis_class(browser, checkpoint, tmp_path):
    from selenium.webdriver.common.by import By

    image = tmp_path / "seven.png"
    Image.fromarray(synthetic_images(np.array([7]), np.random.default_rng(3))[0]).save(image)
    with ServeProcess(str(checkpoint)) as server:
        expected = httpx.post(f"{server.url}/predict",
                              files={"f": (image.name, image.read_bytes())}).json()  # fmt: skip
        browser.get(f"{server.url}/")
        wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute(
            "data-ready") == "true")  # fmt: skip
        browser.find_element(By.ID, "file").send_keys(str(image))
        shown = wait_for(browser, lambda d: d.find_element(By.ID, "predicted").text)
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        top = browser.find_element(By.CSS_SELECTOR, "#bars .bar.top").get_attribute("data-class")
        assert shown == expected["predictions"][0]["class"] == top
        assert [bar.get_attribute("data-class") for bar in bars] == expected["classes"]
        # A stroke drawn on the canvas is sent as pixels and answered on the page.
        from selenium.webdriver.common.action_chains import ActionChains

        browser.find_element(By.ID, "clear").click()
        pad = browser.find_element(By.ID, "pad")
        ActionChains(browser).move_to_element_with_offset(
            pad, -60, -80
        ).click_and_hold().move_by_offset(40, 60).move_by_offset(20, 100).release().perform()
        assert wait_for(browser, lambda d: d.find_element(By.ID, "predicted").text)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10
        assert browser.find_element(By.ID, "error").text == ""
        served = httpx.get(f"{server.url}/metadata").json()["served"]
    assert served["images"] >= 3  # warm-up, the API's request, the upload, the drawing
