"""Draw ``fourclass_val_misses.jpg``: what the four-class validation set counts as missed cells.

The first 8 four-class validation fields (name-hash split, never trained on) in which the shipped
``wbc-stardist`` misses a derived-mask instance of at least a 7 um disc (the instances the
default validation rule still counts).  At the working pixel size, zoomed 2x:
yellow = derived-mask instances found, green = instances counted as missed, red = detections.

    .venv/bin/python docs/images/make_fourclass_val_misses.py [DATA]
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from leukcore.detect import Detector
from leukcore.detect.data import default_data_dir
from leukcore.detect.train import fourclass_val_items

data = Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_dir()
det = Detector.load("wbc-stardist", device="cpu")
tiles = []
for it in fourclass_val_items(data, det.mpp):
    pts, _, polys = det.predict_image(it.image)
    lab = it.labels
    hit = {int(lab[min(y, lab.shape[0] - 1), min(x, lab.shape[1] - 1)]) for y, x in pts}
    miss = [i for i in np.unique(lab) if i > 0 and i not in hit]
    if not miss:
        continue
    img = np.array(it.image, np.uint8)
    found = np.where(np.isin(lab, miss), 0, np.maximum(lab, 0))
    img[find_boundaries(found, mode="outer")] = (255, 255, 0)
    img[find_boundaries(np.isin(lab, miss), mode="outer")] = (0, 255, 0)
    im = Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST)
    d = ImageDraw.Draw(im)
    for p in polys:
        d.polygon([(float(x) * 2, float(y) * 2) for y, x in p], outline=(255, 0, 0))
    d.text((3, 3), it.name, fill=(0, 0, 0))
    tiles.append(im)
    if len(tiles) == 8:
        break
W, H = max(t.width for t in tiles), max(t.height for t in tiles)
sheet = Image.new("RGB", (4 * W, 2 * H), "white")
for k, t in enumerate(tiles):
    sheet.paste(t, ((k % 4) * W, (k // 4) * H))
out = Path(__file__).with_name("fourclass_val_misses.jpg")
sheet.save(out, quality=80)
print(out, sheet.size)
