"""One source of truth: the Hydra configs agree with the zoo presets and the modules' defaults,
and a stage refuses overrides it would silently ignore."""

from __future__ import annotations

import inspect

import pytest
import yaml

from gpen_lightning.app import refuse_unused_overrides
from gpen_lightning.config import compose, conf_dir
from gpen_lightning.recipes import auto_recipe, auto_value
from gpen_lightning.training import FinetuneModule, PriorModule
from gpen_lightning.zoo import PRESETS


def test_every_model_option_is_the_zoo_preset_of_the_same_name():
    files = {p.stem: p for p in (conf_dir() / "model").glob("*.yaml")}
    assert set(files) == set(PRESETS), "conf/model/ and zoo PRESETS list different models"
    for name, path in files.items():
        raw = yaml.safe_load(path.read_text())
        assert raw["name"] == name, path
        cfg = compose([f"model={name}"]).model
        assert cfg.size == PRESETS[name].size, name
        assert cfg.noise_mode == PRESETS[name].noise_mode, name
        assert set(cfg.recipe) == {
            "batch_size",
            "prior_kimg",
            "finetune_kimg",
            "sample_every_kimg",
            "ema_rampup",
            "ckpt_every_kimg",
            "global_batch",
            "lr",
            "r1_gamma",
            "ema_half_life_kimg",
            "stddev_group",
            "pl_weight",
            "mixing_prob",
            "adv_weight",
            "noise_lr",
            "finetune_lr",
            "finetune_betas",
            "fm_weight",
        }, name


@pytest.mark.parametrize(("stage", "cls"), [("prior", PriorModule), ("finetune", FinetuneModule)])
def test_stage_module_values_equal_the_constructor_defaults(stage, cls):
    """conf/stage/<stage>.yaml spells out every module argument for --help; the literal values
    must be the Python defaults (interpolations such as ${model.recipe...} are the recipe's)."""
    raw = yaml.safe_load((conf_dir() / "stage" / f"{stage}.yaml").read_text())["module"]
    params = inspect.signature(cls.__init__).parameters
    assert set(raw) - {"_target_"} == set(params) - {"self"}, "yaml and signature differ"
    for key, value in raw.items():
        if key in ("_target_", "model") or (isinstance(value, str) and value.startswith("${")):
            continue
        default = params[key].default
        default = list(default) if isinstance(default, tuple) else default
        assert value == default, f"module.{key}: yaml {value!r} vs default {default!r}"


@pytest.mark.parametrize(
    ("stage", "override", "hint"),
    [
        ("evaluate", "data.root=/faces", "input=FACES"),
        ("evaluate", "data=folder", "input=FACES"),
        ("restore", "trainer.max_epochs=2", "trainer.devices"),
        ("export", "trainer.devices=2", "device="),
        ("restore", "logger=csv", "logs nothing"),
        ("export", "module.lr=0.1", "weights=PATH"),
        ("restore", "+degradation.noise=[0,1]", "degrades nothing"),
    ],
)
def test_an_override_a_stage_does_not_read_is_refused(stage, override, hint):
    with pytest.raises(ValueError, match=f"stage={stage} does not use") as err:
        refuse_unused_overrides(stage, ["weights=x.pth", override])
    assert hint in str(err.value)


def test_overrides_a_stage_reads_are_accepted():
    refuse_unused_overrides("evaluate", ["input=/faces", "degradation=paper", "model=gpen-bfr-512"])
    refuse_unused_overrides("restore", ["input=a.jpg", "device=cpu", "bf16=true"])
    refuse_unused_overrides(
        "restore", ["trainer=ddp_sim", "trainer.devices=4", "trainer.num_nodes=2"]
    )
    refuse_unused_overrides("prior", ["trainer.devices=2", "data.root=/x", "logger=csv"])


@pytest.mark.parametrize(
    ("res", "batch", "gamma", "half_life", "lr"),
    [
        (256, 64, 0.2048, 20.0, 0.0025),
        (512, 32, 1.6384, 10.0, 0.0025),
        (1024, 32, 6.5536, 10.0, 0.002),
        (32, 8, 0.0256, 2.5, 0.0025),
    ],
)
def test_auto_recipe_follows_the_stylegan2_ada_formula(res, batch, gamma, half_life, lr):
    recipe = auto_recipe(res, batch)
    assert recipe["r1_gamma"] == pytest.approx(0.0002 * res**2 / batch) == pytest.approx(gamma)
    assert recipe["ema_half_life_kimg"] == pytest.approx(half_life)
    assert recipe["lr"] == lr and recipe["stddev_group"] == min(batch, 4)


def test_presets_pick_their_recipe_and_the_scale_follows_the_global_batch():
    paper = compose(["model=gpen-bfr-512"]).module  # the paper's values, exactly
    assert (paper.lr, paper.r1_gamma, paper.ema_half_life_kimg) == (0.002, 10.0, 10.0)
    assert compose(["model=gpen-tiny-64"]).module.r1_gamma == 10.0  # the tiny presets too
    # make train's preset pre-trains at 5x the rate; its fine-tuning keeps the StyleGAN2 rate
    assert compose([]).module.lr == 0.01 and compose(["model=gpen-tiny-64"]).module.lr == 0.002
    assert compose(["stage=finetune"]).module.lr == 0.002
    tiny = compose(["model=gpen-tiny-64", "recipe=auto"])
    assert tiny.module.r1_gamma == pytest.approx(0.0002 * 64**2 / 8)
    assert tiny.module.lr == 0.0025 and tiny.module.ema_half_life_kimg == pytest.approx(2.5)
    big = compose(["model=gpen-bfr-1024", "recipe=auto"]).module
    assert big.r1_gamma == pytest.approx(0.0002 * 1024**2 / 4) and big.lr == 0.002
    ddp = compose(["model=gpen-tiny-64", "trainer=ddp_sim", "recipe=auto"])  # 2 processes x 8
    assert ddp.model.recipe.global_batch == 16
    assert ddp.module.r1_gamma == pytest.approx(0.0002 * 64**2 / 16)
    assert ddp.module.ema_half_life_kimg == pytest.approx(16 * 10 / 32)
    override = compose(["model=gpen-tiny-64", "recipe=auto", "model.recipe.r1_gamma=1.5"])
    assert override.module.r1_gamma == 1.5
    with pytest.raises(KeyError, match="unknown auto-recipe key"):
        auto_value("beta", 64, 8)
