"""Reading user images: every mode and orientation Pillow hands us, and every way a file can be bad."""
import warnings

import numpy as np
import pytest
from PIL import Image

import ptiedit.images
from ptiedit.images import fit_to_model, fitted_size, load_image, restore_size


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int64)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = (200, 20, 40)
    rgba[:, :2, 3] = 0  # transparent
    rgba[:, 2:4, 3] = 128  # half
    rgba[:, 4:, 3] = 255  # opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.mode == "RGB" and image.size == (6, 4)
    got = pixels(image)
    assert (got[:, :2] == 255).all()
    assert (got[:, 4:] == (200, 20, 40)).all()
    assert np.abs(got[0, 2] - (np.array([200, 20, 40]) * 128 + 255 * 127) / 255).max() <= 1


def test_greyscale_and_palette_with_transparency(tmp_path):
    Image.fromarray(np.full((3, 5), 77, np.uint8), "L").save(tmp_path / "l.png")
    assert (pixels(load_image(tmp_path / "l.png")) == 77).all()

    palette = Image.new("P", (4, 2))
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putdata([0, 1, 1, 1, 0, 1, 1, 1])
    palette.save(tmp_path / "p.png", transparency=0)
    got = pixels(load_image(tmp_path / "p.png"))
    assert (got[0, 0] == 255).all() and (got[1, 0] == 255).all()  # index 0 is transparent
    assert (got[0, 1] == (10, 200, 30)).all()


def test_16_bit_greyscale_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")  # really 16 bits on disk
    got = pixels(load_image(tmp_path / "deep.png"))[0, :, 0]
    assert got[0] == 0 and abs(got[1] - 128) <= 1 and got[2] == 255


def test_exif_orientation_6_is_turned_upright(tmp_path):
    stored = np.zeros((10, 20, 3), np.uint8)  # 20 wide, 10 high, as stored
    stored[0, 0] = (255, 0, 0)  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    image = load_image(tmp_path / "rotated.png")
    assert image.size == (10, 20)
    got = pixels(image)
    assert (got[0, -1] == (255, 0, 0)).all()  # the stored top-left ends at the top-right
    assert got[0, 0].sum() == 0


@pytest.mark.parametrize("size, area, multiple, expected", [
    ((300, 200), 64 * 64, 16, (80, 48)),  # 3:2 on the embedded model (VAE x4, UNet x4): not 64x64
    ((300, 200), 64 * 64, 8, (72, 48)),  # exactly 3:2 where the grid allows it
    ((200, 300), 64 * 64, 16, (48, 80)),  # portrait
    ((3000, 2000), 512 * 512, 8, (624, 416)),  # a 3:2 photo on SD 1.5
    ((4032, 3024), 768 * 768, 64, (832, 640)),  # 4:3 on SD 2.1-768 in multiples of 64
    ((640, 640), 64 * 64, 16, (64, 64)),  # squares keep the model's own size
    ((24, 20), 16 * 16, 4, (16, 12)),  # the tiny test pipelines
])
def test_fitted_size_keeps_the_aspect_ratio_in_multiples(size, area, multiple, expected):
    assert fitted_size(*size, area, multiple) == expected


@pytest.mark.parametrize("area, multiple, stretch", [(64 * 64, 16, 0.20), (16 * 16, 4, 0.20), (512 * 512, 8, 0.012)])
def test_fitted_sizes_are_multiples_within_the_area_close_in_aspect_and_stable(area, multiple, stretch):
    for width in range(100, 300, 13):  # aspect ratios up to 3:1 either way
        for height in range(100, 300, 17):
            w, h = fitted_size(width, height, area, multiple)
            assert w % multiple == 0 and h % multiple == 0 and area / 2 <= w * h <= area
            assert abs(np.log(w / h * height / width)) <= np.log1p(stretch)  # a 20% stretch on 4x4 cells, 1.2% on SD
            assert fitted_size(w, h, area, multiple) == (w, h)  # a result fitted again keeps its size


def test_fit_to_model_keeps_the_whole_picture_without_cropping():
    wide = np.zeros((40, 120, 3), np.uint8)  # 3:1, red | green | blue thirds
    wide[:, :40] = (255, 0, 0)
    wide[:, 40:80] = (0, 255, 0)
    wide[:, 80:] = (0, 0, 255)
    fitted = pixels(fit_to_model(Image.fromarray(wide), 64 * 64, 16))
    assert fitted.shape == (32, 96, 3)  # still 3:1
    assert np.abs(fitted[:, 2] - (255, 0, 0)).max() <= 8  # every band survives: nothing was cropped
    assert np.abs(fitted[:, 48] - (0, 255, 0)).max() <= 8
    assert np.abs(fitted[:, -3] - (0, 0, 255)).max() <= 8


def test_restore_size_gives_exactly_the_input_size():
    original = Image.new("RGB", (301, 199))
    result = fit_to_model(original, 64 * 64, 16)
    assert result.size == (80, 48)
    assert restore_size(result, original).size == (301, 199)


def test_pictures_too_elongated_for_the_model_are_refused():
    with pytest.raises(ValueError, match="more elongated than this model's 16:1 limit"):
        fitted_size(2000, 100, 64 * 64, 16)
    assert fitted_size(1600, 100, 64 * 64, 16) == (256, 16)  # 16:1 still fits


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(tmp_path, fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(noise).save(path, format=fmt)
    data = path.read_bytes()
    half = tmp_path / f"half.{fmt.lower()}"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(half)
    assert load_image(path).size == (64, 64)  # the whole file was fine


@pytest.mark.parametrize("content, reason", [(b"", "not a readable image"),
                                             (b"hello, I am a text file\n", "not a readable image")])
def test_non_images_are_refused(tmp_path, content, reason):
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        load_image(path)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ValueError, match="is a folder"):
        load_image(tmp_path)


@pytest.mark.parametrize("limit", [80, 40])  # Pillow only warns above 80, errors below half the image
def test_decompression_bombs_are_refused_before_decoding(tmp_path, monkeypatch, limit):
    Image.new("RGB", (10, 10)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(ptiedit.images, "MAX_PIXELS", limit)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(ValueError, match="too large"), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        load_image(tmp_path / "bomb.png")


def test_loading_leaves_pillows_global_limit_alone(tmp_path, monkeypatch):
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(ptiedit.images, "MAX_PIXELS", 200)
    load_image(tmp_path / "small.png")
    assert Image.MAX_IMAGE_PIXELS == before
