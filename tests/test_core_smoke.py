import ptiedit
from PIL import Image


def test_tiny_pipeline_inverts_and_edits(tiny_pipe):
    image = Image.new("RGB", (16, 16), (200, 30, 30))
    inversion = ptiedit.invert(tiny_pipe, image, steps=4, inner_steps=2, progress=False)
    assert inversion.cond.shape[0] == 4
    out = ptiedit.edit(tiny_pipe, inversion, "a green circle", [0.0, 1.0], progress=False)
    assert [im.size for im in out] == [(16, 16), (16, 16)]
