"""Config: YAML + _base_ inheritance, key=value overrides with type coercion, errors naming the key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmh.config import (
    DEFAULTS,
    apply_overrides,
    config_hash,
    defaults,
    find_config,
    load_config,
    parse_value,
    save_config,
    stage_train_config,
)


def test_parse_value_types():
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("2e-3") == pytest.approx(2e-3)  # YAML 1.1 would keep this a string
    assert parse_value("[4, 2, 1]") == [4, 2, 1]
    assert parse_value("null") is None
    assert parse_value("true") is True
    assert parse_value("adamw") == "adamw"


def test_overrides_coerce_to_existing_type():
    cfg = apply_overrides(
        defaults(),
        [
            "train.lr=1",
            "train.steps=50",
            "loss.rad.levels=[2, 1]",
            "seed=7",
            "train.optimizer=sgd",
            "loss.rad.temperature=3",
        ],
    )
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["steps"] == 50 and cfg["seed"] == 7
    assert cfg["loss"]["rad"]["levels"] == [2, 1]
    assert isinstance(cfg["loss"]["rad"]["temperature"], float)
    assert DEFAULTS["train"]["lr"] == 2e-3 and defaults()["loss"]["rad"]["levels"] == [4, 2, 1]  # not modified


@pytest.mark.parametrize(
    "bad, match",
    [
        ("train.lrr=1", "train.lrr"),
        ("train.steps=abc", "train.steps"),
        ("train.steps=2.5", "train.steps"),
        ("train.nesterov=3", "train.nesterov"),
        ("seed", "key=value"),
        ("=3", "empty key"),
        ("train=3", "train"),
    ],
)
def test_bad_overrides_name_the_key(bad, match):
    with pytest.raises((KeyError, ValueError), match=match):
        load_config(None, [bad])


def test_plus_adds_keys_and_free_form_sections():
    cfg = load_config(
        None,
        ["+extra.note=hi", "dataset.kwargs.size=64", "stages.teacher.steps=5", "dataset.split_kwargs.train.size=32"],
    )
    assert cfg["extra"]["note"] == "hi"
    assert cfg["dataset"]["kwargs"]["size"] == 64
    assert cfg["dataset"]["split_kwargs"]["train"]["size"] == 32
    assert stage_train_config(cfg, "teacher")["steps"] == 5
    assert stage_train_config(cfg, "student")["steps"] == DEFAULTS["train"]["steps"]


def test_stage_overrides_are_checked():
    cfg = load_config(None, ["stages.teacher.stepz=5"])
    with pytest.raises(KeyError, match="stepz"):
        stage_train_config(cfg, "teacher")


def test_base_inheritance_and_file_errors(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 5e-4\n  steps: 10\nmethod: teacher\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmethod: rad\ntrain:\n  steps: 20\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.batch_size=8"])
    assert cfg["method"] == "rad" and cfg["train"]["lr"] == pytest.approx(5e-4)
    assert cfg["train"]["steps"] == 20 and cfg["train"]["batch_size"] == 8
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "typo.yaml").write_text("trian:\n  lr: 1\n")
    with pytest.raises(KeyError, match="trian"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yaml"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "cycle.yaml").write_text("_base_: cycle.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "cycle.yaml")


def test_validation_errors():
    with pytest.raises(ValueError, match="batch_size"):
        load_config(None, ["train.batch_size=0"])
    with pytest.raises(ValueError, match="train.steps"):
        load_config(None, ["train.steps=null"])
    with pytest.raises(ValueError, match="modalities.student"):
        load_config(None, ["modalities.student=[]"])


@pytest.mark.parametrize(
    "over",
    [
        ["train.checkpoint_every=-5"],  # was read as -1 (none)
        ["stages.student.checkpoint_every=-2"],
        ["stages.student.checkpoint_every=often"],  # was a crash inside the trainer
        ["stages.student.checkpoint_every=true"],
        ["stages.student.checkpoint_every=2.5"],
        ["stages.student.checkpoint_every=null"],
    ],
)
def test_checkpoint_every_is_an_int_of_at_least_minus_one(over):
    key = over[0].split("=")[0]
    with pytest.raises(ValueError, match=re.escape(f"'{key}'") + r" must be an int >= -1.*got"):
        load_config(None, over)


def test_checkpoint_every_errors_from_a_file_name_the_key(tmp_path: Path):
    (tmp_path / "c.yaml").write_text("train:\n  checkpoint_every: true\n")
    with pytest.raises(ValueError, match=r"'train\.checkpoint_every' must be an int >= -1.*True"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "s.yaml").write_text("stages:\n  teacher:\n    checkpoint_every: 1.5\n")
    with pytest.raises(ValueError, match=r"'stages\.teacher\.checkpoint_every' must be an int >= -1"):
        load_config(tmp_path / "s.yaml")
    for ok in (-1, 0, 7):
        cfg = load_config(None, [f"train.checkpoint_every={ok}", f"stages.student.checkpoint_every={ok}"])
        assert stage_train_config(cfg, "student")["checkpoint_every"] == ok


def test_save_roundtrip_and_hash(tmp_path: Path):
    cfg = load_config(None, ["train.steps=11"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_hash(cfg) == config_hash(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_shipped_configs_resolve():
    from mmh.config import config_dir
    from mmh.methods import list_methods, method_stages

    names = [p.relative_to(config_dir()).with_suffix("") for p in config_dir().rglob("*.yaml")]
    names = sorted(n.as_posix() for n in names if not any(s.startswith("_") for s in n.parts))  # _base(.yaml)
    # one file per (dataset, method) for every built-in dataset of the MMH family
    for ds in ("synthetic_motion", "synthetic_antispoof", "synthetic_shapes", "uci_mfeat"):
        assert {f"{ds}/{m}" for m in ("teacher", "baseline", "rad", "dad", "rad_dad")} <= set(names), ds
    for name in names:
        cfg = load_config(find_config(name))
        assert cfg["method"] in list_methods(), name
        assert method_stages(cfg), name
        if name.startswith("papers/thesis/"):  # <method> or an ablation of it: <method>_<variant> (multistream_noconn)
            assert name.split("/")[-1].startswith(cfg["method"]), name
        elif not name.startswith("thesis/"):  # <dataset>/<method>, templates/<dataset>/<method>, papers/mmh/...
            assert cfg["method"] == name.split("/")[-1], name
    with pytest.raises(FileNotFoundError, match="no_such"):
        find_config("synthetic_motion/no_such")


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (this checkout's mmh first on the path); its stdout."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "python"), str(root)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_trainer_imports_no_method():
    mods = _fresh(
        "import sys\nimport mmh.train.trainer, mmh.train.checkpoint\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith(('mmh.methods', 'mmh.runner'))))"
    )
    assert mods.split() == []


def test_methods_declare_their_defaults_where_they_register(monkeypatch):
    import mmh.config
    from mmh.methods import Stage, method_defaults, register_method, registry
    from mmh.methods.rad import RAD_DEFAULTS, RADDistiller

    # the test's method and section stay out of the registry and the schema of the other tests
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(mmh.config, "_LOSS_DEFAULTS", dict(mmh.config._LOSS_DEFAULTS))

    assert method_defaults()["rad"] == RAD_DEFAULTS and defaults()["loss"]["rad"] == RAD_DEFAULTS
    assert RADDistiller.__init__.__kwdefaults__["alpha"] == RAD_DEFAULTS["alpha"]  # the class takes the same
    with pytest.raises(ValueError, match="loss.rad"):  # one section, one set of defaults
        register_method("rad_other_defaults", defaults={"rad": {**RAD_DEFAULTS, "alpha": 0.1}})

    @register_method("test_custom_defaults", defaults={"test_custom": {"weight": 2.0, "layers": None}})
    def recipe(cfg):
        return [Stage("student", "x", lambda ctx: None)]

    cfg = load_config(None, ["method=test_custom_defaults", "loss.test_custom.weight=3"])
    assert cfg["loss"]["test_custom"] == {"weight": 3.0, "layers": None}
    with pytest.raises(KeyError, match="loss.test_custom.wieght"):
        load_config(None, ["loss.test_custom.wieght=3"])


def test_a_config_loads_in_a_fresh_process_without_importing_the_methods():
    """The built-in methods' sections are data of the config layer: ``load_config`` imports no method (nor torch) and
    still gives every ``loss.<section>``."""
    out = _fresh(
        "import json, sys\nfrom mmh.config import METHOD_DEFAULTS, find_config, load_config\n"
        "cfg = load_config(find_config('synthetic_motion/rad'), ['loss.mcl.lam=0.25'])\n"
        "print(json.dumps({'loss': cfg['loss'], 'data': METHOD_DEFAULTS,\n"
        "                  'imported': [m for m in sys.modules if m.startswith(('mmh.methods', 'torch'))]}))"
    )
    got = json.loads(out)
    assert got["imported"] == []
    assert got["loss"]["mcl"]["lam"] == 0.25 and got["loss"]["rad"] == got["data"]["rad"]
    assert set(got["loss"]) == {"ce"} | set(got["data"]) and len(got["data"]) >= 10


def test_the_built_in_methods_declare_exactly_the_config_layers_sections():
    """Importing the methods adds no section (every one they declare is in ``METHOD_DEFAULTS``, with the same values)
    and ``METHOD_DEFAULTS`` holds no section that no method declares."""
    out = _fresh(
        "import json\nimport mmh.config as c\nseen = set()\noriginal = c.declare_loss_defaults\n"
        "def spy(section, values, owner='a method'):\n"
        "    seen.add(section)\n    original(section, values, owner)\n"
        "c.declare_loss_defaults = spy\nbefore = c.loss_defaults()\nimport mmh.methods\n"
        "print(json.dumps({'same': c.loss_defaults() == before, 'declared': sorted(seen),\n"
        "                  'data': sorted(c.METHOD_DEFAULTS)}))"
    )
    got = json.loads(out)
    assert got["same"] and got["declared"] == got["data"]


@pytest.mark.parametrize(
    "section, values, error, match",
    [
        ("a.b", {"w": 1.0}, ValueError, "loss.a.b: a section name"),
        ("", {"w": 1.0}, ValueError, "section name"),
        ("ce", {"w": 1.0}, ValueError, "loss.ce, a key of the framework"),
        ("test_bad", [1.0], TypeError, "defaults of loss.test_bad must be a mapping"),
        ("test_bad", {1: 1.0}, TypeError, "string keys"),
        ("rad", {"alpha": 0.1}, ValueError, "loss.rad defaults .* differ"),
    ],
)
def test_bad_method_defaults_are_refused_naming_the_method_and_section(monkeypatch, section, values, error, match):
    import mmh.config
    from mmh.methods import list_methods, register_method, registry

    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    before = mmh.config.loss_defaults()
    with pytest.raises(error, match=f"method 'test_bad'.*{match}|{match}.*method 'test_bad'"):
        register_method("test_bad", defaults={section: values})
    with pytest.raises(error, match=match):
        mmh.config.declare_loss_defaults(section, values)
    with pytest.raises(TypeError, match="method 'test_bad': defaults must be a mapping"):
        register_method("test_bad", defaults=[("x", {})])
    assert mmh.config.loss_defaults() == before and "test_bad" not in list_methods()


def test_loss_cfg_fills_a_partial_hand_built_section_from_the_declared_defaults():
    from mmh.methods import StageContext
    from mmh.methods.rad import RAD_DEFAULTS

    ctx = StageContext({"loss": {"rad": {"alpha": 0.25}}}, 3, {"rgb": 3})
    got = ctx.loss_cfg("rad")
    assert got["alpha"] == 0.25 and {k: v for k, v in got.items() if k != "alpha"} == {
        k: v for k, v in RAD_DEFAULTS.items() if k != "alpha"
    }
    assert StageContext({}, 3, {"rgb": 3}).loss_cfg("rad") == RAD_DEFAULTS
    with pytest.raises(KeyError, match="alhpa"):
        StageContext({"loss": {"rad": {"alhpa": 1}}}, 3, {"rgb": 3}).loss_cfg("rad")
    with pytest.raises(KeyError, match="no registered method"):
        StageContext({}, 3, {"rgb": 3}).loss_cfg("nope")


# ------------------------------------------------------------------------------------ safe reading, run configs
def alias_bomb() -> str:
    """The 'billion laughs' YAML: nine nested anchors, each a list of nine aliases of the one before (9^9 leaves)."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_config_is_refused_at_once(tmp_path: Path):
    import time

    from mmh.config import read_yaml

    text = alias_bomb()
    assert len(text.encode()) < 500
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text)
    for read in (
        lambda: load_config(bomb),
        lambda: read_yaml(bomb),
        lambda: load_config(None, [f"+x={{{text.replace(chr(10), ', ')}}}"]),
    ):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="refused: more than 100000 nodes") as info:
            read()
        assert time.perf_counter() - t0 < 1.0
    assert "override value" in str(info.value)
    with pytest.raises(ValueError, match=f"config file {bomb}"):
        load_config(bomb)
    many = tmp_path / "many.yaml"  # 101 aliases of a scalar: small when expanded, but past the alias bound
    many.write_text("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n")
    with pytest.raises(ValueError, match="more than 100 aliases"):
        read_yaml(many)
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    with pytest.raises(ValueError, match="recursive"):
        read_yaml(loop)


def test_ordinary_anchors_still_work(tmp_path: Path):
    p = tmp_path / "anchors.yaml"
    p.write_text("train: &tr {steps: 7, lr: 0.01}\nstages:\n  teacher: *tr\n  student: {<<: *tr, steps: 3}\n")
    cfg = load_config(p)
    assert cfg["train"]["steps"] == 7 and cfg["stages"]["teacher"] == {"steps": 7, "lr": 0.01}
    assert stage_train_config(cfg, "student")["steps"] == 3 and stage_train_config(cfg, "student")["lr"] == 0.01


def test_oversized_and_non_text_yaml_files_are_refused(tmp_path: Path):
    from mmh.config import MAX_YAML_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("seed: 1\n" + "#" * MAX_YAML_BYTES + "\n")
    with pytest.raises(ValueError, match=f"config file {big} is larger than"):
        load_config(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"seed: \xff\xfe\n")
    with pytest.raises(ValueError, match=f"{binary} is not UTF-8"):
        load_config(binary)


def test_a_run_config_reads_back_with_its_added_keys(tmp_path: Path):
    from mmh.config import load_run_config

    cfg = load_config(None, ["+note=hello", "train.steps=9"])
    save_config(cfg, tmp_path / "config.yaml")
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no temporary file left beside it
    with pytest.raises(KeyError, match="note"):  # an ordinary config still has typo protection
        load_config(tmp_path / "config.yaml")
    back = load_run_config(tmp_path)
    assert back == cfg and back["note"] == "hello"
    assert load_run_config(tmp_path, ["train.progress=false"])["train"]["progress"] is False


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "is empty"),
        ("# nothing\n", "is empty"),
        ("[1, 2]\n", "must hold a mapping"),
        ("seed: [\n", "not valid YAML"),
        ("_base_: x.yaml\nseed: 1\n", "_base_"),
        ("seed: -1\n", "seed"),
    ],
)
def test_a_damaged_run_config_is_an_error_naming_the_file(tmp_path: Path, content: str, match: str):
    from mmh.config import load_run_config

    (tmp_path / "config.yaml").write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_run_config(tmp_path)
    assert str(tmp_path / "config.yaml") in str(info.value)
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        load_run_config(tmp_path / "elsewhere")


def test_resume_changes_allow_only_the_resume_safe_settings():
    from mmh.config import RESUME_SAFE, resume_changes

    saved = load_config(None, ["+note=hello"])
    safe = apply_overrides(
        saved, ["train.progress=false", "threads=2", "stages.teacher.log_every=1", "eval.batch_size=7"]
    )
    assert resume_changes(saved, safe) == {
        "train.progress": False,
        "threads": 2,
        "stages.teacher.log_every": 1,
        "eval.batch_size": 7,
    }
    assert resume_changes(saved, saved) == {}
    for over in (["train.steps=80"], ["+extra=1"], ["note=bye"], ["stages.teacher.lr=0.5"], ["seed=3"]):
        key = over[0].split("=")[0].lstrip("+")
        with pytest.raises(ValueError, match=rf"cannot resume with changed settings {re.escape(key)} .*--run-dir"):
            resume_changes(saved, apply_overrides(saved, over))
    assert "train.steps" not in RESUME_SAFE and "train.progress" in RESUME_SAFE
