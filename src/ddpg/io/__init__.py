"""Files at the edges, one module a job; every name is exported here too (``from ddpg.io import load_image``).

- :mod:`~ddpg.io.atomic`: atomic writes (temporary file, flush, rename), the folder's lock, killed writers'
  temporaries
- :mod:`~ddpg.io.staged`: several outputs published together (:class:`StagedFiles`), a crash's half-published
  set undone (:func:`recover_staged`)
- :mod:`~ddpg.io.json_files`: strict JSON written atomically, JSON from a user's folder read within bounds
- :mod:`~ddpg.io.bounded`: image files read within the pixel limit (byte limit, bounded inflate, Pillow opened
  lazily), decoder failures mapped to InputError / ImageTooLarge
- :mod:`~ddpg.io.png16`: the 16-bit PNG codec (pypng)
- :mod:`~ddpg.io.images`: images loaded (8/16-bit, grey, RGBA, EXIF orientation) and saved as PNG
- :mod:`~ddpg.io.measurements`: exact float measurements as ``.pt`` / ``.npy``
- :mod:`~ddpg.io.inputs`: the input files a list of files and folders holds
- :mod:`~ddpg.io.sizes`: centre crop + resize, reflect padding

Images are (3, H, W) float32 tensors in [0, 1] here; samplers work in [-1, 1].
"""

from ddpg.checks import DEFAULT_MAX_PIXELS
from ddpg.io.atomic import (
    LOCK_NAME,
    TEMPORARY_NAME,
    FolderBusy,
    atomic_write,
    folder_lock,
    fsync_path,
    remove_stale_temporaries,
)
from ddpg.io.bounded import (
    MAX_BYTES_PER_PIXEL,
    PILLOW_TEXT_LIMITS,
    check_pixels,
    decoder_error,
    inflate_bounded,
    open_image,
    read_bounded,
)
from ddpg.io.images import image_size, load_image, save_image, to_uint
from ddpg.io.inputs import IMAGE_SUFFIXES, MEASUREMENT_SUFFIXES, collect_inputs
from ddpg.io.json_files import MAX_JSON_BYTES, MAX_JSON_DEPTH, read_json, save_json, strict_json
from ddpg.io.measurements import load_measurement, load_npy, load_pt, save_measurement
from ddpg.io.png16 import ADAM7, PNG_SIGNATURE, decode_png16, encode_png16, png_passes
from ddpg.io.sizes import center_crop_resize, pad_bottom_right, padded_size
from ddpg.io.staged import PENDING_SUFFIX, StagedFiles, pending_record, recover_staged

__all__ = [
    "ADAM7", "DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "LOCK_NAME", "MAX_BYTES_PER_PIXEL", "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH", "MEASUREMENT_SUFFIXES", "PENDING_SUFFIX", "PILLOW_TEXT_LIMITS", "PNG_SIGNATURE",
    "TEMPORARY_NAME", "FolderBusy", "StagedFiles", "atomic_write", "center_crop_resize", "check_pixels",
    "collect_inputs", "decode_png16", "decoder_error", "encode_png16", "folder_lock", "fsync_path", "image_size",
    "inflate_bounded", "load_image", "load_measurement", "load_npy", "load_pt", "open_image", "pad_bottom_right",
    "padded_size", "pending_record", "png_passes", "read_bounded", "read_json", "recover_staged",
    "remove_stale_temporaries", "save_image", "save_json", "save_measurement", "strict_json", "to_uint",
]
