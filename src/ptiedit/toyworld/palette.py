"""The shapes world's named colours (RGB, 0..255): the words captions use for objects and backgrounds."""
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 25),
    "purple": (140, 60, 190),
    "pink": (250, 150, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}
