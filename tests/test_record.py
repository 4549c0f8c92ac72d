"""The Recorder (issue 28): any training loop records checkpoints into a store, in inference mode, with
training modes restored, appending only what is missing, with imprinting where the outputs are not over
the evaluation classes."""

import numpy as np
import pytest
import torch
from torch import nn

import taskgeom as tg
from taskgeom.store import PredictionStore
from taskgeom.train.record import Recorder

N, C, D = 120, 4, 8


def data(seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    x = torch.randn(n, D, generator=g) + 2.0 * nn.functional.one_hot(y, D).float()
    return x, y


class Net(nn.Module):
    def __init__(self, out=C):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.fc = nn.Linear(16, out)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.body(x))


def loop(rec, steps, seed=0, hook_every=None):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data(1)
    hook = rec.hook(hook_every) if hook_every else None
    for step in range(steps + 1):
        if hook is not None:
            hook(model, step, epoch=step / steps)
        if step == steps:
            break
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_records_logits_in_inference_mode_and_restores_training_modes(tmp_path):
    rec = Recorder(tmp_path / "s", data(), "toy", task="all", method="sgd", seed=0)
    model = Net()
    model.train()
    model.body[3].eval()  # a mixed state is restored as it was
    before = {m: m.training for m in model.modules()}
    x, _ = data()
    idx = rec.record(model, step=0)
    assert idx == 0 and {m: m.training for m in model.modules()} == before
    model.eval()
    with torch.no_grad():
        want = torch.softmax(model(x).double(), 1).numpy()
    got = np.asarray(rec.traj.probs[0], dtype=np.float64)
    np.testing.assert_allclose(got, want, atol=2e-3)  # float16 on disk
    assert rec.traj.checkpoints[0]["accuracy"] == pytest.approx(float((want.argmax(1) == data()[1].numpy()).mean()))


def test_a_rerun_appends_only_what_is_missing(tmp_path):
    store = PredictionStore(tmp_path / "s", create=True)
    rec = Recorder(store, data(), "toy", task="all", method="sgd", seed=0, dtype="float32")
    loop(rec, 20, hook_every=10)
    assert rec.recorded_steps() == [0, 10, 20]
    first = np.asarray(rec.traj.probs).copy()
    rec2 = Recorder(store, data(), "toy", task="all", method="sgd", seed=0, dtype="float32")
    loop(rec2, 40, hook_every=10)  # the same loop, run further: only steps 30 and 40 are new
    assert rec2.recorded_steps() == [0, 10, 20, 30, 40] and len(store.select()) == 1
    np.testing.assert_array_equal(np.asarray(rec2.traj.probs)[:3], first)
    with pytest.raises(ValueError, match="increasing order"):
        rec2.record(Net(), step=25)
    assert store.verify() == []


def test_imprinting_from_features_and_a_data_loader(tmp_path):
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    rec = Recorder(tmp_path / "s", loader, "toy", imprint=data(2), task="all", method="sgd", seed=0)
    model = loop(rec, 10, hook_every=5)
    assert rec.recorded_steps() == [0, 5, 10]
    model.eval()
    with torch.no_grad():
        head = tg.imprint(model.features(data(2)[0]), data(2)[1], C, head="cosine-ml")
        want = np.asarray(head(model.features(x)))
    np.testing.assert_allclose(np.asarray(rec.traj.probs[-1], dtype=np.float64), want, atol=2e-3)
    assert rec.traj.checkpoints[-1]["imprint_head"] == "cosine-ml"
    # a model whose outputs are over other classes needs imprinting: one line saying so
    plain = Recorder(tmp_path / "s2", data(), "toy", task="all")
    with pytest.raises(ValueError, match="pass imprint="):
        plain.record(Net(out=7), step=0)


def test_a_mismatched_evaluation_set_is_a_one_line_error(tmp_path):
    Recorder(tmp_path / "s", data(), "toy", task="all")
    x, y = data()
    with pytest.raises(ValueError, match="evaluation set 'toy' already exists with different labels"):
        Recorder(tmp_path / "s", (x, y.roll(1)), "toy", task="all")
    with pytest.raises(ValueError, match="batch_size must be"):
        Recorder(tmp_path / "s", data(), "toy", batch_size=0)
    with pytest.raises(ValueError, match="labels must be integers"):
        Recorder(tmp_path / "s", (x, y.float() + 0.5), "toy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_records_a_cuda_model(tmp_path):
    rec = Recorder(tmp_path / "s", data(), "toy", task="all")
    rec.record(Net().cuda(), step=0)
    assert len(rec.traj) == 1


def test_probabilities_are_never_softmaxed_twice(tmp_path):
    model = nn.Sequential(Net(), nn.Softmax(dim=1))
    rec = Recorder(tmp_path / "s", data(), "toy", task="all")
    with pytest.raises(ValueError, match="look like probabilities"):
        rec.record(model, step=0)
    ok = Recorder(tmp_path / "s", data(), "toy", task="all", name="probs", outputs="probabilities", dtype="float32")
    ok.record(model, step=0)
    model.eval()
    with torch.no_grad():
        want = model(data()[0]).numpy()
    np.testing.assert_allclose(np.asarray(ok.traj.probs[0]), want, atol=1e-6)


def test_two_recipes_with_one_seed_are_two_trajectories(tmp_path):
    """Recipes that differ only in their config (two learning rates, the same seed) get their own trajectories
    by default (a hash of the config in the name), and a re-run of either resumes it."""
    store = tmp_path / "s"
    names = {lr: Recorder(store, data(), "toy", task="all", seed=0, config={"lr": lr}).traj.name for lr in (0.1, 0.01)}
    assert names[0.1] != names[0.01] and all("config-" in n for n in names.values())
    again = Recorder(store, data(), "toy", task="all", seed=0, config={"lr": 0.1})
    assert again.traj.name == names[0.1]


def test_other_inputs_under_the_same_name_are_refused(tmp_path):
    """The evaluation set is its labels and its inputs: the same labels with other images (or another
    preprocessing) under the same name would mix two evaluations in one picture, so it is a one-line error;
    the same inputs again (as a tensor pair or a data loader) are accepted."""
    x, y = data()
    Recorder(tmp_path / "s", (x, y), "toy", task="all")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    Recorder(tmp_path / "s", loader, "toy", task="all", name="again")  # same inputs, batched differently
    with pytest.raises(ValueError, match="recorded from other inputs") as err:
        Recorder(tmp_path / "s", (x * 2, y), "toy", task="all", name="scaled")
    assert "\n" not in str(err.value)
