"""TensorBoard scalars of a training run, written when the ``tensorboard`` package is installed.

``training.tensorboard``: ``auto`` (default: write when importable, else only the CSV logs),
``true`` (required: a clear error when missing) or ``false``. Events go to ``<output>/tensorboard``;
a resumed run purges the events logged after its checkpoint, so every step appears once.
"""

from __future__ import annotations

from ..optional import install_command, require

INSTALL_HINT = f"pip install tensorboard  (or: {install_command('tensorboard')})"


def parse_mode(value) -> str:
    """``auto`` | ``true`` | ``false`` from a YAML value (bool or string)."""
    mode = str(value).strip().lower()
    if mode not in ("auto", "true", "false"):
        raise ValueError(f"training.tensorboard must be auto, true or false, not {value!r}")
    return mode


class TensorBoardLog:
    """Scalars to a ``SummaryWriter``, or nothing when TensorBoard is off or not installed."""

    def __init__(self, folder: str | None, mode, resume_step: int = 0):
        self.writer = None
        if folder is None or parse_mode(mode) == "false":
            return
        try:
            require("tensorboard", "tensorboard", "TensorBoard logs of training runs")
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            if parse_mode(mode) == "true":
                raise ValueError(
                    f"training.tensorboard is true but TensorBoard is missing: {INSTALL_HINT}"
                ) from exc
            return
        # events are logged at the step count after each step: those past the checkpoint's go
        self.writer = SummaryWriter(folder, purge_step=resume_step + 1 if resume_step > 0 else None)

    @property
    def active(self) -> bool:
        return self.writer is not None

    def scalars(self, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
