"""Training settings by concern: every TrainConfig field belongs to one concern or to the methods that read
it, `taskgeom train --help` lists them so, the registry's methods declare their own settings, and the command
line refuses an option that the run's method would ignore."""

import dataclasses

import pytest
from test_adversarial_cli import TINY, call, one_line_error

from taskgeom import cli
from taskgeom.train import METHODS, TrainConfig
from taskgeom.train.config import CONCERNS, METHOD_SETTINGS, concern_of
from taskgeom.train.methods import Method, register_method


def test_every_setting_has_one_concern():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    for name in fields:
        concern_of(name)  # a field in no concern and owned by no method raises
    general = [n for names in CONCERNS.values() for n in names]
    assert len(general) == len(set(general)) and set(general) <= set(fields)
    owned = {n for names in METHOD_SETTINGS.values() for n in names}
    assert not owned & set(general) and set(fields) == set(general) | owned


def test_the_registry_declares_the_methods_own_settings():
    for name, method in METHODS.items():
        assert tuple(method.settings) == METHOD_SETTINGS[name], name


def test_a_new_method_declares_its_settings_and_unknown_ones_are_refused():
    class Tempered(Method):
        name = "test-tempered"
        settings = ("temperature",)

    class Bad(Method):
        name = "test-bad"
        settings = ("no_such_field",)

    try:
        register_method(Tempered)
        assert METHOD_SETTINGS["test-tempered"] == ("temperature",)
        assert "test-tempered" in concern_of("temperature")
        with pytest.raises(ValueError, match="no_such_field"):
            register_method(Bad)
    finally:
        METHODS.pop("test-tempered", None)
        METHOD_SETTINGS.pop("test-tempered", None)


def test_help_lists_the_settings_by_concern(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    sections = [line[:-1] for line in out.splitlines() if line.startswith("training: ")]
    assert sections[: len(CONCERNS)] == ["training: " + c for c in CONCERNS]
    assert "training: settings of method fixmatch" in sections
    # every option is under its section (the first of fixmatch's after its heading)
    assert out.index("training: settings of method fixmatch") < out.index("\n  --threshold")


@pytest.mark.parametrize(
    "option, method",
    [(["--way", "3"], "supervised"), (["--threshold", "0.9"], "protonet"), (["--init-from", "x.pt"], "supervised")],
)
def test_an_option_of_another_method_is_a_usage_error(option, method, tmp_path, capsys):
    err = one_line_error(["train", *TINY, "--method", method, *option, "--store", tmp_path / "s"], capsys, 2)
    assert f"this run's method is {method}" in err and option[0] in err
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_an_option_at_its_default_for_another_method_is_refused_too(tmp_path, capsys):
    rc, err = call(["train", *TINY, "--method", "supervised", "--way", "5", "--store", tmp_path / "s"], capsys)
    assert rc == 2 and "setting of method protonet" in err[-1]


def test_a_shared_python_config_may_hold_every_methods_settings():
    # in Python one config can serve several methods (a sweep's base, a test's settings): each reads its own
    TrainConfig(method="supervised", way=3, threshold=0.5).validate()


def test_each_concern_and_each_method_has_its_settings_class():
    from taskgeom.train.config import VIEWS, FastRecipe, Optimisation, method_settings_class

    assert list(VIEWS) == list(CONCERNS)
    for title, view in VIEWS.items():
        assert tuple(f.name for f in dataclasses.fields(view)) == CONCERNS[title]
    cfg = TrainConfig(method="protonet", way=3, lr=0.2, lookahead=5)
    assert cfg.part(Optimisation).lr == 0.2 and cfg.part(FastRecipe).lookahead == 5
    own = cfg.method_settings
    assert type(own).__name__ == "ProtonetSettings" and own.way == 3 and own.projection_dim == 128
    with pytest.raises(dataclasses.FrozenInstanceError):
        own.way = 4
    for name in METHODS:
        fields = tuple(f.name for f in dataclasses.fields(method_settings_class(name)))
        assert fields == METHOD_SETTINGS[name]
    with pytest.raises(ValueError, match="unknown method"):
        method_settings_class("no-such-method")
