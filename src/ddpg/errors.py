"""Exceptions raised by ddpg; each message names the file or parameter and the problem."""


class DdpgError(Exception):
    """Base class of every error ddpg raises on purpose."""


class ConfigError(DdpgError, ValueError):
    """An unknown name, a malformed config or preset, or an invalid parameter value."""


class CheckpointError(DdpgError):
    """A checkpoint file that is missing, truncated, unsafe or of another architecture."""


class OperatorError(DdpgError, ValueError):
    """Operator parameters that do not fit the image (scale, kernel, mask, η)."""


class InputError(DdpgError, ValueError):
    """An input image or measurement that cannot be used."""


class ParameterError(ConfigError):
    """An invalid value of one named parameter: ``param`` as the Python API spells it (e.g. ``sigma_y``), the
    ``value`` given and the ``problem``; the message reads ``sigma_y=2.0: problem``. Messages raised in the api
    never name a command-line flag: the command line prints the flag that sets ``param`` instead
    (``--sigma-y 2.0: problem``, :func:`ddpg.cli.flags.flag_message`)."""

    def __init__(self, param: str, value: object, problem: str):
        self.param, self.value, self.problem = param, value, problem
        super().__init__(f"{param}={value}: {problem}")


class ImageTooLarge(InputError):
    """An image, mask or kernel refused for its size before it is decoded: more pixels or values than the
    limit (``max_pixels``), a file larger than any image of that many pixels could be, or a decompression bomb
    Pillow itself refuses (a server answers 413)."""
