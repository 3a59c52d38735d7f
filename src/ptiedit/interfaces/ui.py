"""`ptiedit ui`: a Gradio web app for Prompt Tuning Inversion editing (Dong et al., ICCV 2023).

PTI's two stages split naturally across a session: stage 1 (DDIM inversion + per-step prompt tuning of c_t,
the expensive part) runs once per image and settings and is kept in the session's gr.State; stage 2 (sampling
from z*_T on c~_t = eta c_target + (1 - eta) c_t) reruns whenever only the target prompt or eta change.
The inversion is made with an empty init prompt, which makes it reusable for any target prompt.
Everything goes through the library API (`invert`, `edit`); nothing here reimplements the algorithm.

Device, dtype and the memory options are `ptiedit ui` flags, shown read-only in the page: changing any of them
means loading the model again, which one shared server cannot do per request (other sessions' inversions would
stop matching, and a reload of Stable Diffusion takes longer than an edit); whoever starts the server knows the
hardware. The shapes-world examples and the pixel-art rendering appear only for the embedded model.
"""
from __future__ import annotations

import argparse
import atexit
import random
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .options import DEFAULTS as SETTING_DEFAULTS
from .options import RANGES, check_setting

MAX_UPLOAD_SIZE = "20mb"  # gradio refuses larger uploads before they reach the app
MAX_UPLOAD_PIXELS = 4096 * 4096  # checked from the header, before any pixel is decoded
MAX_PROMPT_CHARS = 1000
MAX_SWEEP = 8  # etas in one sweep (sampled in one batch unless --max-batch splits it)
# mode: editing.edit.DEFAULT_MODE, written out so that this module loads without torch
DEFAULTS = {**SETTING_DEFAULTS, "sweep": "0.6, 0.9, 1.0", "mode": "faithful"}
MODE_CHOICES = [("faithful: keep what the prompt does not change", "faithful"), ("paper: plain stage 2", "paper")]
EDIT_FILE, INVERSION_FILE = "ptiedit-edit.png", "ptiedit-inversion.safetensors"
# Shapes-world images are 64 px: the embedded model's views get class "pixelated", scaled up with crisp pixels.
CSS = """.pixelated img { image-rendering: pixelated; }
#input-image img, #reconstruction img, #result img, #mask img { width: 100%; height: 100%; object-fit: contain; }
#reconstruction img, #result img, #mask img { box-sizing: border-box; padding: 36px 8px 8px; }"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="ID_OR_DIR",
                        help="diffusers Stable Diffusion folder or hub id (default: the embedded shapes-world model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    from .cli.common import add_device_options

    add_device_options(parser)  # --device, --dtype and the memory options, as for the other commands
    parser.add_argument("--max-batch", type=int, default=None, metavar="N", help="at most N etas in one UNet "
                        "batch (an edit samples up to 10: the eta, the sweep and the reconstruction)")


def run(args: argparse.Namespace) -> int:
    """Load the model and serve the app until interrupted. Bad options raise ValueError (one line)."""
    if args.port is not None and not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_batch is not None and args.max_batch < 1:
        raise ValueError(f"--max-batch must be at least 1, got {args.max_batch}")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the web app needs gradio: pip install 'ptiedit[ui]'") from None
    from .cli.common import MEMORY_OPTIONS, open_model  # the CLI's device checks and model naming

    pipe = open_model(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"ptiedit ui: listening on {args.host}: anyone who can reach it can use this machine's compute")
    memory = {name: getattr(args, name) for name in MEMORY_OPTIONS}
    serve(pipe, host=args.host, port=args.port, share=args.share, block=True, memory=memory,
          max_batch=args.max_batch)
    return 0


def is_embedded(pipe) -> bool:
    """Whether pipe is the embedded shapes-world model (loaded by default or named by its folder)."""
    from ..models.loading import EMBEDDED_MODEL, EMBEDDED_NAME

    name = getattr(pipe, "ptiedit_model_name", None)
    return name == EMBEDDED_NAME or (name is not None and Path(name) == EMBEDDED_MODEL.resolve())


def runtime_text(pipe, memory: dict, max_batch: int | None) -> str:
    """One line saying where and how the model runs, and which flags change it."""
    from ..models.family import model_family

    denoiser_dtype = str(model_family(pipe).denoiser.dtype)  # the UNet, or a flow model's transformer
    dtype = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(denoiser_dtype,
                                                                                           denoiser_dtype)
    options = ", ".join(f"{name.replace('_', ' ')} {'on' if on else 'off'}" for name, on in memory.items())
    batch = f"at most {max_batch} etas per UNet batch" if max_batch else "all etas in one UNet batch"
    return (f"Running on **{pipe.device}** in **{dtype}**; {options}; {batch}. Set when the server starts "
            "(`ptiedit ui --device --dtype --gradient-checkpointing --vae-slicing --vae-tiling --cpu-offload "
            "--max-batch`): changing them loads the model again.")


@dataclass
class Session:
    """One browser session: its inversion, what it was made from, and a folder for its downloads."""

    folder: Path
    key: tuple | None = None
    inversion: object = None  # ptiedit.Inversion
    reconstruction: Image.Image | None = None
    inversions: int = 0

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def open_upload(upload) -> Image.Image:
    """An unprocessed gr.Image value (or a path) as RGB via ptiedit.images.load_image; oversized images are refused
    from the header first. Gradio has already checked that the path lies in its upload cache."""
    from ..images import load_image

    path, name = (upload.get("path"), upload.get("orig_name")) if isinstance(upload, dict) else (upload, None)
    if not path:
        raise ValueError("upload an image or pick an example first")
    name = name or Path(path).name
    try:
        with Image.open(path) as header:  # lazy: reads the size, decodes nothing
            width, height = header.size
    except Exception:  # not an image at all: load_image below says so in its own words
        width = height = 0
    if width * height > MAX_UPLOAD_PIXELS:
        raise ValueError(f"{name}: image is too large ({width}x{height}); the limit is {MAX_UPLOAD_PIXELS:,} pixels")
    try:
        return load_image(path)
    except ValueError as error:  # name the user's file, not the server's copy of it
        raise ValueError(str(error).replace(str(path), name)) from None


def parse_etas(text: str) -> list[float]:
    """Comma- or space-separated etas in [0, 1], e.g. "0.6, 0.8, 1.0"; an empty text gives no sweep."""
    etas = []
    for word in text.replace(",", " ").split():
        try:
            eta = float(word)
        except ValueError:
            raise ValueError(f"eta sweep: {word!r} is not a number") from None
        if not 0 <= eta <= 1:
            raise ValueError(f"eta sweep: {word} is outside [0, 1]")
        etas.append(eta)
    if len(etas) > MAX_SWEEP:
        raise ValueError(f"eta sweep: at most {MAX_SWEEP} values, got {len(etas)}")
    return etas


def check_request(prompt, eta, steps, guidance, inner_steps, seed) -> dict:
    """The edit settings as numbers, or a one-line ValueError (API callers can bypass the sliders' limits): the
    ranges and checks of the command line (options.py). guidance None (an API caller's "not given") stays None: the
    model's own, as on the command line."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("enter a target prompt that describes the edited image")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is too long ({len(prompt)} characters; at most {MAX_PROMPT_CHARS})")
    values = {"eta": eta, "steps": steps, "guidance": guidance, "inner_steps": inner_steps, "seed": seed}
    return {"prompt": prompt, **{name: None if name == "guidance" and value is None else check_setting(name, value)
                                 for name, value in values.items()}}


def render_examples(folder: Path, count: int = 4) -> list[list[str]]:
    """A few shapes-world renders, each with a target prompt for one attribute edit of it, then the demo's shape
    over a photo with its colour edit (the object changes, the photo stays)."""
    from ..demo import PHOTO_EXAMPLE, PHOTO_SCENE
    from ..toyworld import Edit, random_edit, random_scene, render, target_prompt

    rng = random.Random(4)
    examples = []
    for index, kind in enumerate(("object_color", "object_shape", "background_color", "object_color")[:count]):
        scene = random_scene(rng, n_objects=1)
        path = folder / f"shapes-{index}.png"
        render(scene).save(path)
        examples.append([str(path), target_prompt(scene, random_edit(scene, rng, kinds=[kind]))])
    return examples + [[str(PHOTO_EXAMPLE), target_prompt(PHOTO_SCENE, Edit("object_color", "yellow"))]]


def build_app(pipe, workdir: Path, memory: dict | None = None, max_batch: int | None = None):
    """The Blocks app; one pipeline shared by all sessions, one inversion per session. memory: the memory options
    the pipeline was loaded with (shown in the page); max_batch: passed to edit()."""
    import gradio as gr
    import torch
    from tqdm.auto import tqdm

    from .. import edit, invert
    from ..models.family import PromptTruncatedWarning, model_family
    from ..images import pixels_sha256
    from ..models.fingerprint import pipeline_fingerprint
    from ..outputs import result_settings, write_png
    from .cli.common import MEMORY_OPTIONS

    family = model_family(pipe)
    size = family.default_size
    model_guidance = family.default_guidance  # PTI's: 7.5 SD/SDXL, 7 SD3, 1 FLUX.1 (distilled)
    model_name = getattr(pipe, "ptiedit_model_name", "unknown model")
    embedded = is_embedded(pipe)
    pixelated = "pixelated" if embedded else None
    memory = memory or dict.fromkeys(MEMORY_OPTIONS, False)

    def refuse(error: ValueError):
        """Bad input: a message in the page, no traceback in the server log."""
        return gr.Error(str(error), print_exception=False)

    def check_upload(upload):
        """Refuse a bad upload at once: say why and clear it."""
        try:
            open_upload(upload)
        except ValueError as error:
            gr.Warning(str(error))
            return None
        return gr.skip()

    def run_edit(upload, prompt, eta, mode, sweep, steps, guidance, inner_steps, seed, random_seed, session,
                 progress=gr.Progress(track_tqdm=True)):  # declaring it makes gradio show the tqdm bar
        try:
            settings = check_request(prompt, eta, steps, guidance, inner_steps, seed)
            sweep_etas = parse_etas(sweep if isinstance(sweep, str) else "")
            if mode not in dict(MODE_CHOICES).values():
                raise ValueError(f"unknown editing mode {mode!r}")
            image = open_upload(upload)  # invert() fits it to the model, keeping its aspect ratio
        except ValueError as error:
            raise refuse(error) from None
        session = session or Session(Path(tempfile.mkdtemp(prefix="session-", dir=workdir)))
        if settings["guidance"] is None:
            settings["guidance"] = model_guidance
        # The inversion depends on the image, the model, these settings and the seed (a random one is drawn for each
        # new inversion); the prompt and eta only steer editing.
        key = (pixels_sha256(image), settings["steps"], settings["guidance"], settings["inner_steps"],
               pipeline_fingerprint(pipe)["model_sha256"], "random" if random_seed else settings["seed"])
        fresh = session.key != key
        yield {status: f"**Inverting** the image (PTI, {settings['steps']} steps x up to {settings['inner_steps']} "
                       "tuning steps), then editing…" if fresh else
                       "**Editing only**: reusing this session's inversion (only the prompt, eta or mode changed)…"}
        start = time.perf_counter()
        # One display for both stages: invert and edit add their steps to it and name the stage running;
        # gr.Progress(track_tqdm=True) shows it in the page.
        bar = tqdm(total=0, unit="step")
        try:
            with bar, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", PromptTruncatedWarning)
                if fresh:
                    session.key = None  # set again once the edit succeeds: a failure must not reuse a stale key
                    if random_seed:
                        settings["seed"] = random.SystemRandom().randint(*RANGES["seed"])
                    torch.manual_seed(settings["seed"])  # PTI is deterministic; seeded and recorded all the same
                    session.inversion = invert(pipe, image, method="pti", steps=settings["steps"],
                                               guidance=settings["guidance"], inner_steps=settings["inner_steps"],
                                               progress=bar)
                    session.inversion.settings["seed"] = settings["seed"]  # recorded, as the CLI does
                    session.inversions += 1
                    session.inversion.save(session.folder / INVERSION_FILE)
                # One batch: the main eta, the sweep, and eta = 0 (the reconstruction) after a new inversion.
                etas = list(dict.fromkeys([settings["eta"]] + sweep_etas + ([0.0] if fresh else [])))
                edited, masks = edit(pipe, session.inversion, settings["prompt"], etas, progress=bar, mode=mode,
                                     max_batch=max_batch, return_masks=True)
                images, masks = dict(zip(etas, edited)), dict(zip(etas, masks))
        except ValueError as error:
            yield {status: f"Failed: {error}"}
            raise refuse(error) from None
        for warning in caught:
            if issubclass(warning.category, PromptTruncatedWarning):
                gr.Warning(str(warning.message))
        if fresh:
            session.key, session.reconstruction = key, images[0.0]
        edited, seed = images[settings["eta"]], session.inversion.settings["seed"]
        write_png(edited, session.folder / EDIT_FILE,
                  result_settings(session.inversion, prompt=settings["prompt"], eta=settings["eta"], seed=seed,
                                  mode=mode))
        seconds = time.perf_counter() - start
        yield {result: edited, reconstruction: session.reconstruction, mask_view: masks[settings["eta"]],
               gallery: [(images[e], f"eta = {e:g}") for e in sweep_etas],
               status: f"Inverted and edited in {seconds:.1f} s." if fresh else
                       f"Edited only (reused this session's inversion) in {seconds:.1f} s.",
               counter: f"inversions this session: {session.inversions}", png_file: str(session.folder / EDIT_FILE),
               inversion_file: str(session.folder / INVERSION_FILE), seed_box: seed, state: session}

    with gr.Blocks(title="ptiedit: Prompt Tuning Inversion editor", analytics_enabled=False) as demo:
        gr.Markdown(f"## ptiedit: text-driven editing with Prompt Tuning Inversion\nModel: **{model_name}** "
                    f"(up to {size}x{size} px; other shapes keep their aspect ratio at about that many pixels). "
                    "The image is inverted once per session and settings; changing only the prompt or eta edits "
                    "again without inverting.")
        state = gr.State(None, delete_callback=lambda session: session.close() if session else None)
        with gr.Row():
            source = gr.Image(label="input image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                              elem_id="input-image", elem_classes=pixelated, height=320)
            reconstruction = gr.Image(label="reconstruction (eta = 0)", interactive=False, format="png",
                                      elem_id="reconstruction", elem_classes=pixelated, height=320)
            result = gr.Image(label="edited", interactive=False, format="png", elem_id="result",
                              elem_classes=pixelated, height=320)
            mask_view = gr.Image(label="edit mask (white: changed; faithful mode)", interactive=False, format="png",
                                 elem_id="mask", elem_classes=pixelated, height=320)
        with gr.Row():
            prompt = gr.Textbox(label="target prompt", placeholder="describe the edited image, e.g. a green circle "
                                "in the center on a white background", max_length=MAX_PROMPT_CHARS, scale=4,
                                elem_id="prompt")
            button = gr.Button("Edit", variant="primary", scale=1, elem_id="edit-button")
        with gr.Row():
            eta = gr.Slider(*RANGES["eta"], value=DEFAULTS["eta"], step=0.05, label="eta (0 = reconstruction, "
                            "1 = target prompt only)", elem_id="eta")
            mode = gr.Radio(MODE_CHOICES, value=DEFAULTS["mode"], label="editing mode", elem_id="mode")
            sweep = gr.Textbox(value=DEFAULTS["sweep"], label=f"eta sweep (up to {MAX_SWEEP}, comma-separated)",
                               elem_id="sweep")
        with gr.Accordion("Advanced", open=False, elem_id="advanced"):
            with gr.Row():
                steps = gr.Slider(*RANGES["steps"], value=DEFAULTS["steps"], step=1, label="DDIM steps",
                                  elem_id="steps")
                guidance = gr.Slider(*RANGES["guidance"], value=model_guidance, step=0.5,
                                     label=f"guidance scale (this model's default: {model_guidance:g})",
                                     elem_id="guidance")
                inner_steps = gr.Slider(*RANGES["inner_steps"], value=DEFAULTS["inner_steps"], step=1,
                                        label="prompt-tuning steps per timestep", elem_id="inner-steps")
            with gr.Row():
                seed_box = gr.Number(DEFAULTS["seed"], precision=0, minimum=RANGES["seed"][0],
                                     maximum=RANGES["seed"][1], label="seed (seeds torch before inverting and is "
                                     "recorded in the PNG; PTI and DDIM are deterministic)", elem_id="seed")
                random_seed = gr.Checkbox(False, label="random seed", elem_id="random-seed")
            gr.Markdown(runtime_text(pipe, memory, max_batch), elem_id="runtime")
        status = gr.Markdown("Upload an image or pick an example, type a target prompt and press Edit.",
                             elem_id="status")
        counter = gr.Markdown("inversions this session: 0", elem_id="inversion-count")
        gallery = gr.Gallery(label="eta sweep", columns=6, fit_columns=False, height=250, format="png",
                             elem_id="sweep-gallery", elem_classes=pixelated)
        with gr.Row():
            png_file = gr.File(label="edited PNG (settings in its metadata)", interactive=False, elem_id="download-png")
            inversion_file = gr.File(label="inversion (.safetensors, for ptiedit edit)", interactive=False,
                                     elem_id="download-inversion")
        if embedded:  # shapes-world scenes mean nothing to other models
            gr.Examples(render_examples(workdir), inputs=[source, prompt], label="shapes-world examples")

        # preprocess=False: the handlers get the upload's cached path and open it themselves (open_upload), so a
        # bad file gets this app's one-line message rather than gradio's own decoding error.
        source.upload(check_upload, source, source, concurrency_limit=None, show_progress="hidden", preprocess=False,
                      api_visibility="private")
        inputs = [source, prompt, eta, mode, sweep, steps, guidance, inner_steps, seed_box, random_seed, state]
        outputs = [result, reconstruction, mask_view, gallery, status, counter, png_file, inversion_file, seed_box,
                   state]
        # Both triggers share one concurrency group, so the queue runs one job on the model at a time.
        for trigger, visibility in ((button.click, "public"), (prompt.submit, "undocumented")):
            trigger(run_edit, inputs, outputs, api_name="edit", api_visibility=visibility, concurrency_id="model",
                    show_progress_on=[result, reconstruction, mask_view, gallery], preprocess=False)
    return demo


def serve(pipe, host: str = "127.0.0.1", port: int | None = None, share: bool = False, block: bool = True,
          memory: dict | None = None, max_batch: int | None = None):
    """Build and launch the app, running one job at a time (one model, one device); returns (demo, url).

    block=True serves until interrupted; block=False returns at once, and demo.close() stops the server.
    memory and max_batch: as build_app takes them."""
    import gradio as gr

    workdir = Path(tempfile.mkdtemp(prefix="ptiedit-ui-"))
    atexit.register(shutil.rmtree, workdir, True)
    demo = build_app(pipe, workdir, memory, max_batch)
    demo.queue(default_concurrency_limit=1, max_size=32)
    # System fonts: the default theme fetches web fonts, which offline machines cannot reach.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    try:
        _, url, share_url = demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                                        max_file_size=MAX_UPLOAD_SIZE, show_error=True, ssr_mode=False, theme=theme,
                                        css=CSS, quiet=True)
    except OSError as error:  # gradio's first sentence; the rest advises launch() arguments, not our options
        raise ValueError(f"cannot serve on {host}:{port}: {str(error).split('. ')[0]}") from None
    if block:
        print(f"ptiedit ui: serving {getattr(pipe, 'ptiedit_model_name', 'a model')} at {share_url or url} "
              "(Ctrl+C stops)", flush=True)
        demo.block_thread()
    return demo, url
