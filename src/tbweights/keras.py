"""`WeightsCallback`: log a Keras model's weights to TensorBoard while it trains.

    model.fit(x, y, callbacks=[tbweights.keras.WeightsCallback("runs/mlp")])

Step 0 contains the initial weights (logged at `on_train_begin`). Later steps
are counted in epochs (`every_n_epochs`) or in batches (`every_n_batches`),
so step N means "after N epochs" or "after N batches" respectively.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import keras

from tbweights.writer import WeightWriter

logger = logging.getLogger(__name__)


class WeightsCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Write weight histograms and statistics every N epochs or every N batches.

    `logdir` is a directory (a new event file is made there) or a
    `WeightWriter` that stays open and is not closed by this callback. Other
    keyword arguments (`first`, `buckets`, `include`, `exclude`,
    `include_buffers`, `scalars`, `track_change`, `check_init`) are passed to
    `WeightWriter`. Steps go on across several `fit()` calls; `close()` closes
    the event file this callback opened.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str] | WeightWriter,
        every_n_epochs: int | None = 1,
        every_n_batches: int | None = None,
        **writer_options: Any,
    ) -> None:
        super().__init__()
        for option, value in (("every_n_epochs", every_n_epochs), ("every_n_batches", every_n_batches)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{option} must be a positive integer or None, got {value!r}")
        if every_n_batches is not None:
            every_n_epochs = None
        if isinstance(logdir, WeightWriter):
            if writer_options:
                raise ValueError(
                    f"writer options {sorted(writer_options)} cannot change an already open WeightWriter; "
                    "set them when you create it"
                )
            self._writer: WeightWriter | None = logdir
            self._owns_writer = False
            self._logdir = None
        else:
            self._writer = None
            self._owns_writer = True
            self._logdir = logdir
        self._writer_options = writer_options
        self.every_n_epochs = every_n_epochs
        self.every_n_batches = every_n_batches
        # Counted across calls to fit(), so a second fit() goes on from the first's steps.
        self._batches_seen = 0
        self._epochs_seen = 0
        self._initial_logged = False

    @property
    def writer(self) -> WeightWriter:
        if self._writer is None:
            self._writer = WeightWriter(self._logdir, **self._writer_options)
        return self._writer

    def _log(self, step: int) -> None:
        self.writer.log(self.model, step)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._initial_logged:
            return
        self._initial_logged = True
        if not self.model.weights:
            logger.warning(
                "the initial weights of %s were not logged because it is not built yet; "
                "call model.build(input_shape) before fit() to log them at step 0",
                self.model.name,
            )
            return
        self._log(0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches_seen += 1
        if self.every_n_batches is not None and self._batches_seen % self.every_n_batches == 0:
            self._log(self._batches_seen)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epochs_seen += 1
        if self.every_n_epochs is not None and self._epochs_seen % self.every_n_epochs == 0:
            self._log(self._epochs_seen)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # The writer stays open, so a later fit() goes on in the same event file.
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the event file this callback opened; a writer passed in stays open."""
        if self._writer is not None and self._owns_writer:
            self._writer.close()
            self._writer = None
