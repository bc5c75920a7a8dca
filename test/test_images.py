"""Image conversion: every supported encoding decodes to RGB; bad buffers fail with the source named."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vla_ros.core.errors import ObservationError
from vla_ros.core.images import check_rgb, decode_compressed_image, decode_raw_image, resize_with_pad

RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [40, 50, 60], [70, 80, 90]]], dtype=np.uint8)


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.concatenate([RGB, np.full((2, 3, 1), 7, np.uint8)], axis=2)),
        ("bgra8", np.concatenate([RGB[:, :, ::-1], np.full((2, 3, 1), 7, np.uint8)], axis=2)),
    ],
)
def test_color_encodings_decode_to_rgb(encoding, pixels):
    channels = pixels.shape[2]
    out = decode_raw_image(pixels.tobytes(), height=2, width=3, step=3 * channels, encoding=encoding)
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_replicated():
    mono = np.array([[0, 128, 255]], dtype=np.uint8)
    out = decode_raw_image(mono.tobytes(), height=1, width=3, step=3, encoding="mono8")
    assert out.shape == (1, 3, 3) and out[0, 1].tolist() == [128, 128, 128]


def test_row_padding_in_step_is_skipped():
    padded = np.zeros((2, 12), dtype=np.uint8)  # 3 px * 3 ch = 9 bytes + 3 bytes of row padding
    padded[:, :9] = RGB.reshape(2, 9)
    out = decode_raw_image(padded.tobytes(), height=2, width=3, step=12, encoding="rgb8")
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoding": "yuv422"}, "unsupported encoding 'yuv422'"),
        ({"step": 6}, "step 6 is smaller than width"),
        ({"height": 3}, "data has 18 bytes, expected step\\*height = 9\\*3 = 27"),
        ({"height": 0}, "empty image"),
    ],
)
def test_bad_buffers_name_the_camera(kwargs, match):
    args = {"height": 2, "width": 3, "step": 9, "encoding": "rgb8", "source": "/cam/wrist"} | kwargs
    with pytest.raises(ObservationError, match=match) as info:
        decode_raw_image(RGB.tobytes(), **args)
    assert "/cam/wrist" in str(info.value)


def test_empty_data_is_refused():
    with pytest.raises(ObservationError, match="data has 0 bytes"):
        decode_raw_image(b"", height=2, width=3, step=9, encoding="rgb8")


def test_compressed_round_trip():
    image = np.zeros((16, 24, 3), dtype=np.uint8)
    image[:, :12] = [255, 0, 0]
    ok, png = cv2.imencode(".png", image[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(decode_compressed_image(png.tobytes()), image)
    with pytest.raises(ObservationError, match="could not be decoded"):
        decode_compressed_image(b"not an image")
    with pytest.raises(ObservationError, match="no data"):
        decode_compressed_image(b"")


def test_resize_with_pad_keeps_aspect_ratio():
    image = np.full((100, 200, 3), 255, dtype=np.uint8)  # 2:1 into a square: pads top and bottom
    out = resize_with_pad(image, (100, 100))
    assert out.shape == (100, 100, 3)
    assert (out[:25] == 0).all() and (out[75:] == 0).all() and (out[25:75] == 255).all()
    assert resize_with_pad(image, (100, 200)) is image  # right size already: no copy


def test_check_rgb():
    assert check_rgb(RGB) is RGB
    with pytest.raises(ObservationError, match="float32"):
        check_rgb(RGB.astype(np.float32), source="front")


def test_large_shrink_averages_instead_of_aliasing():
    # One-pixel stripes alternate 0/255: a box-averaging shrink gives mid-grey, point sampling would not.
    stripes = np.zeros((480, 640, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    out = resize_with_pad(stripes, (224, 224))
    content = out[28:196]  # 640x480 fits as 224x168, padded by 28 rows above and below
    assert out.shape == (224, 224, 3)
    assert (out[:28] == 0).all() and (out[196:] == 0).all()
    assert abs(float(content.mean()) - 127.5) < 2 and content.std() < 5


def test_resize_with_pad_top_left_puts_the_bars_where_lerobot_does():
    image = np.full((48, 64, 3), 200, dtype=np.uint8)
    centred = resize_with_pad(image, (64, 64))
    top_left = resize_with_pad(image, (64, 64), padding="top_left")
    assert centred[:8].max() == 0 and centred[56:].max() == 0 and centred[8:56].min() == 200
    assert top_left[:16].max() == 0 and top_left[16:].min() == 200
