"""Reading user images: every mode and orientation Pillow hands us, and every way a file can be bad."""
import warnings

import numpy as np
import pytest
from PIL import Image

import ptiedit.images
from ptiedit.images import fit_to_model, load_image


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


def test_fit_to_model_crops_the_centre_square():
    wide = np.zeros((40, 120, 3), np.uint8)
    wide[:, :40] = (255, 0, 0)
    wide[:, 40:80] = (0, 255, 0)
    wide[:, 80:] = (0, 0, 255)
    fitted = fit_to_model(Image.fromarray(wide), 8)
    assert fitted.size == (8, 8)
    assert np.abs(pixels(fitted)[:, 1:-1] - (0, 255, 0)).max() <= 8  # the filter may blur the outer columns


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
