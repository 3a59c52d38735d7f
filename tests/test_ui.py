"""The web app `ptiedit ui`: its input checks, and a real headless Chromium driving it through Playwright.

The browser tests serve the embedded shapes-world model when it is installed (and then check with the attribute
reader that the edit changed the object's colour), otherwise the tiny random pipeline of conftest (16x16 px,
where the edit can only be checked to differ from the input). PTIEDIT_UI_TEST_MODEL=DIR serves another
diffusers folder instead (e.g. an intermediate export of the model being trained) for manual runs.
"""
import importlib.util
import io
import json
import os
import re
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ptiedit.interfaces.cli import main
from ptiedit.interfaces.ui import MAX_SWEEP, check_request, open_upload, parse_etas
from ptiedit.models.loading import EMBEDDED_MODEL
from ptiedit.toyworld.edits import Edit, target_prompt
from ptiedit.toyworld.render import render
from ptiedit.toyworld.scene import Obj, Scene

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCENE = Scene("white", (Obj("circle", "red", "big", "center"),))
EDIT = Edit("object_color", "blue")
TIMEOUT_MS = 180_000  # generous: on 2 cores the in-process server shares the CPU with Chromium


# ------------------------------------------------------------------------------------------- input checks

def test_parse_etas_reads_a_sweep_and_refuses_bad_values():
    assert parse_etas("0.6, 0.8 1") == [0.6, 0.8, 1.0]
    assert parse_etas("  ") == []
    for text, reason in (("0.5, x", "'x' is not a number"), ("1.5", "outside [0, 1]"), ("-0.1", "outside"),
                         ("nan", "outside"), (", ".join(["0.5"] * (MAX_SWEEP + 1)), f"at most {MAX_SWEEP}")):
        with pytest.raises(ValueError, match=re.escape(reason)):
            parse_etas(text)


def test_check_request_returns_numbers_and_refuses_bad_settings():
    settings = check_request("a blue circle", "0.5", 20.0, 7.5, 3, 7)
    assert settings == {"prompt": "a blue circle", "eta": 0.5, "steps": 20, "guidance": 7.5, "inner_steps": 3,
                        "seed": 7}
    assert isinstance(settings["steps"], int) and isinstance(settings["inner_steps"], int)
    good = dict(prompt="a blue circle", eta=0.5, steps=20, guidance=7.5, inner_steps=3, seed=0)
    for change, reason in (({"prompt": "   "}, "enter a target prompt"), ({"prompt": None}, "enter a target prompt"),
                           ({"prompt": "a" * 1001}, "too long"), ({"eta": 1.2}, "eta must be between"),
                           ({"eta": float("nan")}, "eta must be between"), ({"steps": 20.5}, "whole number"),
                           ({"steps": 0}, "steps must be between"), ({"inner_steps": -1}, "inner steps must be"),
                           ({"guidance": "lots"}, "guidance must be a number"), ({"seed": -3}, "seed must be")):
        with pytest.raises(ValueError, match=reason):
            check_request(**{**good, **change})


def test_open_upload_reads_images_and_refuses_others_by_the_users_file_name(tmp_path):
    picture = tmp_path / "upload-1234"
    render(SCENE).convert("RGBA").save(picture, format="PNG")
    image = open_upload({"path": str(picture), "orig_name": "scene.png"})
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), np.asarray(render(SCENE)))
    script = tmp_path / "cache-5678.png"
    script.write_text("import os; os.system('echo pwned')\n")
    with pytest.raises(ValueError, match="^notes.png: not a readable image") as error:
        open_upload({"path": str(script), "orig_name": "notes.png"})
    assert str(tmp_path) not in str(error.value)
    huge = tmp_path / "huge.png"
    Image.new("1", (5000, 5000)).save(huge)  # a few kB on disk, 25 megapixels once decoded
    with pytest.raises(ValueError, match=r"too large \(5000x5000\)"):
        open_upload(str(huge))
    with pytest.raises(ValueError, match="upload an image"):
        open_upload(None)


def test_cli_ui_refuses_bad_options_in_one_line(capsys):
    assert main(["ui", "--port", "70000"]) == 2
    assert main(["ui", "--model", "/nonexistent/model"]) == 2
    assert main(["ui", "--max-batch", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("ptiedit: error: ") for line in lines), lines
    assert "65535" in lines[0]
    assert ("/nonexistent/model" if importlib.util.find_spec("gradio") else "pip install 'ptiedit[ui]'") in lines[1]
    assert "--max-batch must be at least 1" in lines[2]
    if importlib.util.find_spec("gradio"):
        assert main(["ui", "--device", "toaster"]) == 2
        assert "unknown device 'toaster'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ page content

def page_components(pipe, folder: Path, **options) -> list[dict]:
    """The components of the app built for pipe (not served): type, elem_id, elem_classes, value."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'ptiedit[ui]')")
    from ptiedit.interfaces.ui import build_app

    folder.mkdir(exist_ok=True)
    config = build_app(pipe, folder, **options).get_config_file()
    return [{**c["props"], "type": c["type"]} for c in config["components"]]  # props hold a "type" too


def pixelated(components) -> list[str]:
    return [c.get("elem_id") for c in components if "pixelated" in (c.get("elem_classes") or [])]


def test_shapes_examples_and_pixel_art_only_for_the_embedded_model(tmp_path, tiny_pipe):
    if not (EMBEDDED_MODEL / "model_index.json").exists():
        pytest.skip("the embedded model is not installed")
    from ptiedit import load_pipeline

    embedded = page_components(load_pipeline(), tmp_path / "a")
    assert any(c["type"] == "dataset" for c in embedded)  # gr.Examples
    assert set(pixelated(embedded)) == {"input-image", "reconstruction", "result", "mask", "sweep-gallery"}
    other = page_components(tiny_pipe, tmp_path / "b")
    assert not any(c["type"] == "dataset" for c in other)
    assert pixelated(other) == []


def test_the_page_shows_device_dtype_and_memory_options(tmp_path, tiny_pipe):
    memory = {"gradient_checkpointing": True, "vae_slicing": False, "vae_tiling": True, "cpu_offload": False}
    components = page_components(tiny_pipe, tmp_path, memory=memory, max_batch=3)
    text = next(c["value"] for c in components if c.get("elem_id") == "runtime")
    for part in ("**cpu**", "**fp32**", "gradient checkpointing on", "vae slicing off", "vae tiling on",
                 "cpu offload off", "at most 3 etas", "ptiedit ui --device"):
        assert part in text, text


def test_the_sliders_and_checks_take_the_command_lines_ranges(tmp_path, tiny_pipe, capsys):
    """One definition (interfaces/options.py): the page's limits, and a value just outside one is refused by the app
    and by the CLI with the same words."""
    from ptiedit.interfaces import options, ui
    from ptiedit.interfaces.cli import common as cli

    assert ui.RANGES is cli.RANGES is options.RANGES and ui.check_setting is cli.check_setting
    assert all(ui.DEFAULTS[name] == cli.DEFAULTS[name] for name in cli.DEFAULTS)
    sliders = {c.get("elem_id"): c for c in page_components(tiny_pipe, tmp_path / "page")}
    for name, elem_id in (("eta", "eta"), ("steps", "steps"), ("guidance", "guidance"), ("inner_steps", "inner-steps"),
                          ("seed", "seed")):
        assert (sliders[elem_id]["minimum"], sliders[elem_id]["maximum"]) == options.RANGES[name], name
    image = tmp_path / "in.png"
    render(SCENE).save(image)
    good = dict(prompt="a blue circle", eta=0.5, steps=20, guidance=7.5, inner_steps=3, seed=0)
    for name in ("steps", "guidance", "inner_steps", "seed"):
        low, high = options.RANGES[name]
        for bad in (low - 1, high + 1):
            bad = float(bad) if name == "guidance" else bad  # as the CLI parses it
            with pytest.raises(ValueError) as refused:
                check_request(**{**good, name: bad})
            flag = f"--{name.replace('_', '-')}"
            assert main(["invert", str(image), "-o", str(tmp_path / "inv.safetensors"), flag, str(bad)]) == 2
            err = capsys.readouterr().err
            assert str(refused.value) == f"{name.replace('_', ' ')} must be between {low} and {high}, got {bad}"
            assert err == f"ptiedit: error: {flag} must be between {low} and {high}, got {bad}\n"


def edit_handler(pipe, folder: Path):
    """The app's Edit handler, called as gradio calls it (a generator of updates)."""
    from ptiedit.interfaces.ui import build_app

    folder.mkdir(exist_ok=True)
    demo = build_app(pipe, folder)
    return next(f.fn for f in demo.fns.values() if f.fn.__name__ == "run_edit")


def test_the_seed_box_seeds_the_inversion_and_is_recorded(tmp_path, tiny_pipe, monkeypatch):
    """The typed seed seeds torch before inverting and is recorded; a new seed alone inverts again; "random seed"
    draws one in range and shows it in the box."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'ptiedit[ui]')")
    import ptiedit
    from ptiedit.interfaces.ui import EDIT_FILE, RANGES, Session
    from ptiedit.outputs import read_png_settings

    seeds, invert = [], ptiedit.invert

    def recording(*args, **kwargs):
        seeds.append(torch.initial_seed())
        return invert(*args, **kwargs)

    monkeypatch.setattr(ptiedit, "invert", recording)
    run_edit = edit_handler(tiny_pipe, tmp_path / "app")
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(image)
    session = None

    def press(seed, random_seed=False):
        nonlocal session
        last = list(run_edit(str(image), "a red circle", 0.5, "paper", "", 2, 7.5, 1, seed, random_seed, session))[-1]
        session = next(v for v in last.values() if isinstance(v, Session))
        box = next(v for v in last.values() if isinstance(v, int) and not isinstance(v, bool))
        return box, read_png_settings(session.folder / EDIT_FILE)["seed"]

    assert press(5) == (5, 5) and seeds == [5]
    assert press(5) == (5, 5) and seeds == [5]  # same settings: the inversion is reused
    assert press(6) == (6, 6) and seeds == [5, 6] and session.inversions == 2
    drawn, recorded = press(6, random_seed=True)
    assert drawn == recorded == seeds[-1] and RANGES["seed"][0] <= drawn <= RANGES["seed"][1] and len(seeds) == 3


def test_guidance_defaults_to_the_models_own(tmp_path, tiny_pipe):
    """The slider starts at the family's guidance (invert()'s default: FLUX.1 is guidance-distilled, 1), and an API
    call without one inverts at it."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'ptiedit[ui]')")
    from ptiedit.interfaces.ui import Session

    from .test_flow import tiny_flow

    assert check_request("a star", 0.5, 2, None, 1, 0)["guidance"] is None
    flux = tiny_flow("flux")
    for name, pipe, guidance in (("sd", tiny_pipe, 7.5), ("flux", flux, 1.0)):
        sliders = {c.get("elem_id"): c for c in page_components(pipe, tmp_path / name)}
        assert sliders["guidance"]["value"] == guidance, name
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(image)
    updates = list(edit_handler(flux, tmp_path / "app")(str(image), "a red circle", 0.5, "paper", "", 2, None, 1, 0,
                                                        False, None))
    session = next(v for v in updates[-1].values() if isinstance(v, Session))
    assert session.inversion.guidance == 1.0 and session.key[2] == 1.0


# ------------------------------------------------------------------------------------------------ browser

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, pipe, trained) for the app served on a free loopback port in this process; trained: a shapes-world
    model, whose edits the attribute reader can check."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'ptiedit[ui]')")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"Debian chromium is not installed at {CHROMIUM} (run .ci/browser.sh)")
    from ptiedit import load_pipeline
    from ptiedit.interfaces.ui import serve

    model = os.environ.get("PTIEDIT_UI_TEST_MODEL")
    trained = model is not None or (EMBEDDED_MODEL / "model_index.json").exists()
    if not trained:
        from .conftest import build_tiny_pipeline

        model = tmp_path_factory.mktemp("tiny-epsilon")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_tiny_pipeline("epsilon").save_pretrained(model, safe_serialization=True)
    pipe = load_pipeline(model)  # None: the embedded model
    # One torch thread: the server shares this machine's 2 cores with Chromium, and oversubscribed OpenMP
    # threads slowed an inversion many-fold (a 60 s timeout was hit).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    demo, url = serve(pipe, port=free_port(), block=False)
    yield url, pipe, trained
    demo.close()
    torch.set_num_threads(threads)


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server[0])
        page.locator("#edit-button").wait_for()
        yield page
        browser.close()


def set_number(page, elem_id: str, value) -> None:
    """Type into the number box of a gradio slider or number field, commit it, and check that the page kept it.

    Retried: a field in an accordion that has just opened can be re-rendered with its old value under the first
    fill (a CI run once edited at the default 50 steps after the test had typed 20)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.wait_for(state="visible")
    for _ in range(5):
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        page.wait_for_timeout(250)  # long enough for a re-render to undo the fill
        if float(box.input_value()) == float(value):
            return
    raise AssertionError(f"#{elem_id} did not keep the value {value}: it shows {box.input_value()}")


def fetch_image(page, selector: str) -> Image.Image:
    source = page.locator(selector).get_attribute("src")
    return Image.open(io.BytesIO(page.request.get(source).body()))


def test_browser_edit_reuses_the_inversion_until_the_settings_change(server, page, tmp_path):
    from playwright.sync_api import expect

    _, pipe, trained = server
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    source = tmp_path / "scene.png"
    render(SCENE).save(source)
    prompt = target_prompt(SCENE, EDIT)  # "a big blue circle in the center on a white background"

    page.locator("#input-image input[type=file]").set_input_files(str(source))
    page.get_by_text("Advanced").click()
    set_number(page, "steps", 20 if trained else 6)
    set_number(page, "inner-steps", 3 if trained else 2)
    page.locator("#sweep textarea, #sweep input").first.fill("0.6, 1.0")
    page.locator("#prompt textarea, #prompt input").first.fill(prompt)
    page.locator("#edit-button").click()
    status, counter = page.locator("#status"), page.locator("#inversion-count")
    expect(status).to_contain_text("Inverted and edited", timeout=TIMEOUT_MS)
    expect(counter).to_have_text("inversions this session: 1")

    edited = fetch_image(page, "#result img")
    assert edited.size == (size, size)
    expect(page.locator("#reconstruction img")).to_be_visible()
    expect(page.locator("#sweep-gallery img")).to_have_count(2)
    expect(page.locator("#sweep-gallery")).to_contain_text("eta = 0.6")
    pixels = np.asarray(edited.convert("RGB"), np.float64)
    given = np.asarray(render(SCENE).resize((size, size), Image.LANCZOS).convert("RGB"), np.float64)
    if trained:
        from ptiedit.toyworld.reader import read_scene

        reading = read_scene(edited, n_objects=1)
        assert (reading.background, reading.objects[0].shape, reading.objects[0].color) == ("white", "circle", "blue")
        reading = read_scene(fetch_image(page, "#reconstruction img"), n_objects=1)
        assert (reading.background, reading.objects[0].shape, reading.objects[0].color) == ("white", "circle", "red")
    else:
        assert np.abs(pixels - given).mean() > 5  # random weights: only "it changed" is meaningful
    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
    assert (tmp_path / "ui.png").stat().st_size > 10_000

    # Only eta changes: edit again from the kept inversion.
    set_number(page, "eta", 0.5)
    page.locator("#edit-button").click()
    expect(status).to_contain_text("Edited only (reused this session's inversion)", timeout=TIMEOUT_MS)
    expect(counter).to_have_text("inversions this session: 1")
    link = page.locator("#download-png a[download]").get_attribute("href")
    png = Image.open(io.BytesIO(page.request.get(link).body()))
    settings = json.loads(png.text["ptiedit"])
    assert (settings["prompt"], settings["eta"], settings["steps"], png.size) == (
        prompt, 0.5, 20 if trained else 6, (size, size))
    assert "Eta: 0.5" in png.text["parameters"]
    assert not np.array_equal(np.asarray(fetch_image(page, "#result img")), np.asarray(edited))
    inversion = page.locator("#download-inversion a[download]").get_attribute("href")
    assert page.request.get(inversion).body()[8:9] == b"{"  # a safetensors header

    # The number of steps changes: the inversion is redone.
    set_number(page, "steps", 10 if trained else 4)
    page.locator("#edit-button").click()
    expect(status).to_contain_text("Inverted and edited", timeout=TIMEOUT_MS)
    expect(counter).to_have_text("inversions this session: 2")


def test_browser_shows_bad_input_in_the_page_and_keeps_serving(server, page, tmp_path):
    import httpx
    from playwright.sync_api import expect

    counter = page.locator("#inversion-count")
    notes = tmp_path / "notes.png"
    notes.write_text("import os; os.system('echo pwned')\n")
    page.locator("#input-image input[type=file]").set_input_files(str(notes))
    expect(page.get_by_text("notes.png: not a readable image")).to_be_visible()

    big = tmp_path / "big.png"
    with open(big, "wb") as file:  # over the 20 MB upload cap; sparse, so quick to make
        file.write(b"\x89PNG")
        file.truncate(21 * 2**20)
    page.locator("#input-image input[type=file]").set_input_files(str(big))
    expect(page.get_by_text("exceed the maximum allowed size")).to_be_visible()
    with open(big, "rb") as file:  # the server refuses it too, for clients other than the page
        answer = httpx.post(server[0] + "gradio_api/upload", files={"files": ("big.png", file, "image/png")})
    assert answer.status_code == 413

    scene = tmp_path / "scene.png"
    render(SCENE).save(scene)
    page.locator("#input-image input[type=file]").set_input_files(str(scene))
    prompt = page.locator("#prompt textarea, #prompt input").first
    prompt.fill("")
    page.locator("#edit-button").click()
    expect(page.get_by_text("enter a target prompt that describes the edited image")).to_be_visible()
    prompt.fill("a big blue circle in the center on a white background")
    page.locator("#sweep textarea, #sweep input").first.fill("0.5, 1.5")
    page.locator("#edit-button").click()
    expect(page.get_by_text("eta sweep: 1.5 is outside [0, 1]")).to_be_visible()
    expect(counter).to_have_text("inversions this session: 0")

    # Still serving, and this session's inversion is its own (the other test's session made two).
    page.locator("#sweep textarea, #sweep input").first.fill("")
    page.get_by_text("Advanced").click()
    set_number(page, "steps", 4)
    set_number(page, "inner-steps", 1)
    page.locator("#edit-button").click()
    expect(page.locator("#status")).to_contain_text("Inverted and edited", timeout=TIMEOUT_MS)
    expect(counter).to_have_text("inversions this session: 1")


def test_the_web_app_edits_at_the_library_default_eta_and_mode():
    from ptiedit.editing.edit import DEFAULT_ETA, DEFAULT_MODE, MODES
    from ptiedit.interfaces.ui import DEFAULTS, MODE_CHOICES

    assert DEFAULTS["eta"] == DEFAULT_ETA and DEFAULT_ETA in parse_etas(DEFAULTS["sweep"])
    assert DEFAULTS["mode"] == DEFAULT_MODE and [value for _, value in MODE_CHOICES] == list(MODES)
