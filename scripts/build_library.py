"""Rebuild assets/library/: real photographs from scikit-image's wheel plus a few generated design assets.

    python scripts/build_library.py

Photographs are re-encoded as JPEG (long side at most MAX_SIDE) from the files scikit-image ships
in ``skimage/data``; their provenance is in README.md. Design assets are drawn with numpy from a
fixed seed, so a rebuild gives the same pictures. Captions live in captions.json (written by hand;
this script does not touch it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# The library folder this script rebuilds (it lives in scripts/, the pictures in assets/library/).
HERE = Path(__file__).resolve().parent.parent / "assets" / "library"
MAX_SIDE = 800
QUALITY = 86

# library file name -> file name inside skimage/data
PHOTOS = {
    "astronaut_eileen_collins.jpg": "astronaut.png",
    "chelsea_the_cat.jpg": "chelsea.png",
    "coffee_cup.jpg": "coffee.png",
    "rocket_falcon9_launch_pad.jpg": "rocket.jpg",
    "red_motorcycle.jpg": "motorcycle_left.png",
    "photographer_with_camera.jpg": "camera.png",
    "moon_surface.jpg": "moon.png",
    "hubble_deep_field.jpg": "hubble_deep_field.jpg",
    "brick_wall.jpg": "brick.png",
    "grass.jpg": "grass.png",
    "gravel.jpg": "gravel.png",
    "greek_coins_pompeii.jpg": "coins.png",
    "retina_fundus.jpg": "retina.jpg",
    "tissue_microscopy_ihc.jpg": "ihc.png",
    "printed_page.jpg": "page.png",
    "handwritten_notes.jpg": "text.png",
    "wall_clock_motion_blur.jpg": "clock_motion.png",
}
GRAPHICS = {  # kept lossless: flat colours and hard edges
    "horse_silhouette.png": "horse.png",
    "color_wheel.png": "color.png",
}


def skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def export_photos() -> None:
    src = skimage_data_dir()
    for dest, name in PHOTOS.items():
        with Image.open(src / name) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        im.save(HERE / dest, "JPEG", quality=QUALITY, optimize=True, progressive=True)
    for dest, name in GRAPHICS.items():
        with Image.open(src / name) as im:
            if im.mode in ("RGBA", "LA", "P", "1"):
                flat = Image.new("RGB", im.size, "white")
                flat.paste(im.convert("RGBA"), mask=im.convert("RGBA").split()[-1])
                im = flat
            im = im.convert("RGB")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
        im.quantize(colors=64).save(HERE / dest, "PNG", optimize=True) if dest.startswith("horse") \
            else im.save(HERE / dest, "PNG", optimize=True)


def _vertical_gradient(h: int, w: int, stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    ys = np.linspace(0, 1, h)
    pos = [s[0] for s in stops]
    cols = np.array([s[1] for s in stops], dtype=np.float32)
    rgb = np.stack([np.interp(ys, pos, cols[:, c]) for c in range(3)], axis=-1)
    return np.repeat(rgb[:, None, :], w, axis=1)


def _paper(rng, h, w, base, fibre_strength) -> Image.Image:
    noise = rng.normal(0, 1, (h, w)).astype(np.float32)
    fibres = Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8))
    fibres = np.asarray(fibres.filter(ImageFilter.GaussianBlur(1.2)), np.float32) / 255 - 0.5
    blotch = np.asarray(Image.fromarray((rng.random((h // 32, w // 32)) * 255).astype(np.uint8))
                        .resize((w, h), Image.BICUBIC), np.float32) / 255 - 0.5
    shade = fibres * fibre_strength + blotch * fibre_strength * 0.6
    img = np.clip(np.array(base, np.float32)[None, None, :] * (1 + shade[..., None]), 0, 255)
    return Image.fromarray(img.astype(np.uint8))


def draw_design_assets() -> None:
    rng = np.random.default_rng(20240501)
    h, w = 384, 512
    _paper(rng, h, w, (241, 233, 214), 0.10).save(HERE / "paper_texture_cream.jpg", quality=QUALITY)
    _paper(rng, h, w, (176, 132, 88), 0.16).save(HERE / "kraft_paper_texture.jpg", quality=QUALITY)

    sunset = _vertical_gradient(h, w, [(0, (28, 36, 92)), (0.45, (196, 86, 96)), (0.75, (248, 160, 76)),
                                       (1, (255, 214, 140))])
    yy, xx = np.mgrid[0:h, 0:w]
    glow = np.exp(-(((xx - w * 0.62) / (w * 0.16)) ** 2 + ((yy - h * 0.86) / (h * 0.16)) ** 2))
    sunset = np.clip(sunset + glow[..., None] * np.array([60, 50, 30]), 0, 255)
    Image.fromarray(sunset.astype(np.uint8)).save(HERE / "sunset_gradient_sky.jpg", quality=QUALITY)

    dawn = _vertical_gradient(h, w, [(0, (150, 190, 232)), (0.55, (236, 200, 214)), (1, (252, 226, 200))])
    Image.fromarray(dawn.astype(np.uint8)).save(HERE / "pastel_dawn_sky.jpg", quality=QUALITY)

    night = _vertical_gradient(h, w, [(0, (6, 8, 24)), (1, (22, 34, 70))])
    stars = rng.random((h, w)) > 0.9965
    brightness = rng.uniform(120, 255, (h, w))
    night[stars] = np.stack([brightness[stars]] * 3, axis=-1)
    img = Image.fromarray(night.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5))
    img.save(HERE / "night_sky_stars.jpg", quality=QUALITY)


if __name__ == "__main__":
    export_photos()
    draw_design_assets()
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    print(f"{HERE}: {total / 1e6:.2f} MB")
