import pytest

import taskgeom


def pytest_report_header(config):
    info = taskgeom.build_info()
    return [f"taskgeom from {taskgeom.__file__}", f"taskgeom build: {info}"]


@pytest.fixture
def interrupt_saves(monkeypatch):
    """``arm(n)``: the training loop raises KeyboardInterrupt right after saving its ``n``-th state (a kill
    at a checkpoint); ``disarm()``: saves as usual again. Returns ``(arm, disarm)``."""
    from taskgeom.train import loop

    real = loop.save_state

    def arm(n: int) -> None:
        calls = [0]

        def dies(*a, **k):
            real(*a, **k)
            calls[0] += 1
            if calls[0] == n:
                raise KeyboardInterrupt

        monkeypatch.setattr(loop, "save_state", dies)

    return arm, lambda: monkeypatch.setattr(loop, "save_state", real)
