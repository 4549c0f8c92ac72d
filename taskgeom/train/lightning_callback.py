"""A PyTorch Lightning callback that records a trajectory through :class:`~taskgeom.train.record.Recorder`
(the ``lightning`` extra)::

    rec = tg.Recorder("my-store", (x_test, y_test), "test", task="all", method="adamw", seed=0)
    trainer = lightning.Trainer(max_epochs=5, callbacks=[RecorderCallback(rec, every_n_steps=50)])
    trainer.fit(module, loader)

It records the untrained model before the first step, every ``every_n_steps`` optimisation steps
(``trainer.global_step``) and the final model, on the global-zero process only; the LightningModule itself
is evaluated (its ``forward`` gives logits over the evaluation classes, or the Recorder imprints its
``features``).
"""

from __future__ import annotations

from .._checks import check_int
from .record import Recorder

try:  # the unified package first, then the older standalone one
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as exc:
        raise ImportError(
            "the Lightning callback needs the 'lightning' extra: pip install 'taskgeom[lightning]'"
        ) from exc

__all__ = ["RecorderCallback"]


class RecorderCallback(Callback):
    """Records checkpoints of a Lightning run (see the module docstring)."""

    def __init__(self, recorder: Recorder, every_n_steps: int = 50):
        super().__init__()
        if not isinstance(recorder, Recorder):
            raise TypeError(f"recorder must be a taskgeom Recorder, got {type(recorder).__name__}")
        self.recorder = recorder
        self.every = check_int(every_n_steps, "every_n_steps", minimum=1)

    def _record(self, trainer, module) -> None:
        if trainer.is_global_zero:
            step = int(trainer.global_step)
            epoch = float(trainer.current_epoch)
            self.recorder.record(module, step=step, epoch=epoch)

    def on_train_start(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._record(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(trainer, pl_module)
