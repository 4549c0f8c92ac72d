"""The Lightning callback (issue 28): a tiny LightningModule trained on the CPU, recorded through the
Recorder at step 0, every few steps and at the end; a second fit of the same run appends nothing."""

import numpy as np
import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from taskgeom.train.lightning_callback import RecorderCallback  # noqa: E402
from taskgeom.train.record import Recorder  # noqa: E402

N, C, D = 96, 3, 6


def data(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % C
    return torch.randn(N, D, generator=g) + 2 * nn.functional.one_hot(y, D).float(), y


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, C))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, rec, epochs):
    torch.manual_seed(0)
    x, y = data(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[RecorderCallback(rec, every_n_steps=4)],
    )
    module = Tiny()
    trainer.fit(module, loader)
    return module


def test_a_lightning_run_is_recorded(tmp_path):
    rec = Recorder(tmp_path / "s", data(0), "toy", task="all", method="lightning-sgd", seed=0, dtype="float32")
    fit(tmp_path, rec, epochs=2)  # 6 steps an epoch: 12 steps
    assert rec.recorded_steps() == [0, 4, 8, 12]
    probs = np.asarray(rec.traj.probs)
    assert probs.shape == (4, N, C) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    assert rec.traj.checkpoints[-1]["accuracy"] > rec.traj.checkpoints[0]["accuracy"]
    again = Recorder(tmp_path / "s", data(0), "toy", task="all", method="lightning-sgd", seed=0, dtype="float32")
    fit(tmp_path, again, epochs=2)
    assert again.recorded_steps() == [0, 4, 8, 12] and np.array_equal(np.asarray(again.traj.probs), probs)
    with pytest.raises(TypeError, match="taskgeom Recorder"):
        RecorderCallback(object())
