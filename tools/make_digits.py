#!/usr/bin/env python3
"""Writes scikit-learn's handwritten digits (1,797 images of 8x8 pixels, 10 classes; UCI
"Optical Recognition of Handwritten Digits", shipped inside scikit-learn, nothing downloaded)
as an ImageFolder: OUT/<digit>/digit_<index>.png.

    python3 tools/make_digits.py OUT          # Debian: apt install python3-sklearn

Each image is scaled from the set's 0..16 grey levels to 0..255 and enlarged 4x (bilinear) to
32x32, the smallest side `vitengine prepare` accepts by default. The file name keeps the index
into sklearn.datasets.load_digits(), so a peer model (tools/digits_peer.py) can score the very
same split from the original arrays. PNGs are written with zlib alone: no imaging library needed.
"""
import os
import struct
import sys
import zlib

from sklearn.datasets import load_digits

SCALE = 4


def png_gray(path, rows):
    # One 8-bit greyscale PNG: signature, IHDR, one IDAT of filter-0 scanlines, IEND.
    h, w = len(rows), len(rows[0])

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def enlarge(img):
    # Bilinear, pixel centres aligned (as an image resize does): the enlarged digit is smooth, like
    # the zoomed and shifted copies training makes of it. With blocky pixel replication instead, the
    # augmented training images (resampled, so smooth) and the untouched test images would differ
    # in kind, and a model trained on one does poorly on the other.
    n, out = len(img), []
    for y in range(n * SCALE):
        fy = min(max((y + 0.5) / SCALE - 0.5, 0), n - 1)
        y0 = int(fy); y1 = min(y0 + 1, n - 1); wy = fy - y0
        row = []
        for x in range(n * SCALE):
            fx = min(max((x + 0.5) / SCALE - 0.5, 0), n - 1)
            x0 = int(fx); x1 = min(x0 + 1, n - 1); wx = fx - x0
            v = ((1 - wy) * ((1 - wx) * img[y0][x0] + wx * img[y0][x1]) +
                 wy * ((1 - wx) * img[y1][x0] + wx * img[y1][x1]))
            row.append(min(255, int(round(v * 255))))
        out.append(row)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_digits.py OUT")
    out = sys.argv[1]
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        folder = os.path.join(out, str(int(label)))
        os.makedirs(folder, exist_ok=True)
        png_gray(os.path.join(folder, "digit_%04d.png" % i), enlarge(img / 16.0))
    print("wrote %d images in %d class folders under %s" % (len(d.images), len(set(d.target)), out))


if __name__ == "__main__":
    main()
