"""One source of truth: the Hydra configs agree with the zoo presets and the modules' defaults,
and a stage refuses overrides it would silently ignore."""

from __future__ import annotations

import pytest
import yaml
from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf import OmegaConf

from gpen_lightning.app import build_stage
from gpen_lightning.config import ROOTS, compose, conf_dir, root_config
from gpen_lightning.options import FinetuneOptions, PriorOptions
from gpen_lightning.recipes import auto_recipe, auto_value, preset_value
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
            "finetune_lr_ratio",
            "finetune_betas",
            "fm_weight",
        }, name


def test_model_presets_take_the_architecture_from_the_zoo_and_share_a_recipe():
    """A preset file names the zoo preset and lists a shared base (conf/model/base/); size and
    noise_mode follow the name (``${gpen.preset:...}``), so a new name moves them too."""
    for path in (conf_dir() / "model").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        assert not {"size", "noise_mode"} & set(raw), f"{path}: the zoo preset gives these"
        assert [d for d in raw["defaults"] if str(d).startswith("base/")], path
    cfg = compose(["model=gpen-tiny-32", "model.name=gpen-bfr-256", "paths.output_dir=/tmp/x"])
    assert (cfg.model.size, cfg.data.size, cfg.module.model.size) == (256, 256, 256)
    assert preset_value("gpen-bfr-256", "narrow") == PRESETS["gpen-bfr-256"].narrow
    with pytest.raises(KeyError, match="unknown preset field 'width'"):
        preset_value("gpen-bfr-256", "width")


@pytest.mark.parametrize(
    ("stage", "options"), [("prior", PriorOptions), ("finetune", FinetuneOptions)]
)
def test_stage_defaults_live_once_in_the_module_options(stage, options):
    """conf/stage/<stage>.yaml sets only what the model preset (or the run) decides, never a
    literal; every other module option is composed at its default from gpen_lightning.options,
    so `--cfg job` lists them all, an override reaches one and an unknown key is refused."""
    own = OmegaConf.load(conf_dir() / "stage" / f"{stage}.yaml").module
    literals = [k for k in own if k != "model" and not OmegaConf.is_interpolation(own, k)]
    assert not literals, f"conf/stage/{stage}.yaml repeats defaults: {literals}"
    composed = compose([f"stage={stage}", "paths.output_dir=/tmp/x"]).module
    defaults = options().as_dict()
    assert list(composed) == ["_target_", "model", *defaults]
    for key in set(defaults) - set(own):
        value = defaults[key]
        assert composed[key] == (list(value) if isinstance(value, tuple) else value), key
    assert compose([f"stage={stage}", "module.r1_every=8"]).module.r1_every == 8
    with pytest.raises(ConfigCompositionException, match=r"module\.xyz"):
        compose([f"stage={stage}", "module.xyz=1"])


def test_modules_take_their_options_and_refuse_unknown_ones():
    model = {"name": "gpen-tiny-32"}
    prior = PriorModule(model=model, r1_every=8)
    assert dict(prior.hparams) == {"model": model, **PriorOptions(r1_every=8).as_dict()}
    finetune = FinetuneModule(model=model, init=None)
    assert dict(finetune.hparams) == {"model": model, **FinetuneOptions(init=None).as_dict()}
    with pytest.raises(TypeError, match="xyz"):
        PriorModule(model=model, xyz=1)
    with pytest.raises(ValueError, match="noise_lr must be"):
        FinetuneModule(model=model, noise_lr="both")


_INPUT = {"restore": ["input=x"], "evaluate": ["input=x"], "export": []}


@pytest.mark.parametrize(
    ("stage", "override"),
    [
        ("evaluate", "data.root=/faces"),
        ("evaluate", "data=folder"),
        ("export", "trainer.devices=2"),
        ("restore", "logger=csv"),
        ("export", "module.lr=0.1"),
        ("restore", "degradation.noise=[0,1]"),
        ("restore", "ckpt_path=last.ckpt"),
    ],
)
def test_an_override_a_stage_does_not_read_is_refused_by_hydra(stage, override):
    """Each stage composes only the groups it reads: Hydra itself refuses the rest."""
    with pytest.raises(ConfigCompositionException):
        compose([f"stage={stage}", *_INPUT[stage], override])


@pytest.mark.parametrize("stage", ["restore", "evaluate", "export"])
def test_an_added_key_a_stage_does_not_take_is_refused_by_the_stage(stage, tmp_path):
    cfg = compose([f"stage={stage}", *_INPUT[stage], f"output={tmp_path}", "+data.root=/faces"])
    with pytest.raises(InstantiationException, match="data"):
        build_stage(cfg)


def test_overrides_a_stage_reads_are_accepted(tmp_path):
    out = f"output={tmp_path}"
    evaluate = build_stage(
        compose(["stage=evaluate", "input=/faces", "degradation=paper", "model=gpen-bfr-512", out])
    )
    assert (evaluate.input, evaluate.model, evaluate.output) == ("/faces", "gpen-bfr-512", out[7:])
    assert evaluate.degradation["_target_"].endswith("Degradation")
    restore = build_stage(
        compose(["stage=restore", "input=a.jpg", "device=cpu", "bf16=true", "trainer=ddp_sim", out])
    )
    assert (restore.device, restore.bf16, restore.processes()) == ("cpu", True, 2)
    nodes = compose(["stage=restore", "input=a", "trainer=multinode", "trainer.devices=4", out])
    assert build_stage(nodes).processes() == 8  # 2 nodes x 4
    compose(["stage=prior", "trainer.devices=2", "data.root=/x", "logger=csv"])


def test_each_stage_composes_its_own_root_config():
    assert {s: root_config([f"stage={s}"]) for s in ROOTS} == {
        "prior": "config",
        "finetune": "config",
        "restore": "restore",
        "evaluate": "evaluate",
        "export": "export",
        "prepare": "prepare",
        "serve": "serve",
    }
    assert root_config([]) == root_config(["stage=prior,finetune"]) == "config"
    with pytest.raises(ValueError, match="cannot mix"):
        root_config(["stage=prior,restore"])
    with pytest.raises(ValueError, match="unknown stage 'restor'"):
        root_config(["stage=restor"])
    for stage in ("restore", "evaluate", "export"):
        cfg = compose([f"stage={stage}", *_INPUT[stage]])
        assert cfg.task_name == stage
        assert not {"module", "data", "logger", "callbacks", "ckpt_path"} & set(cfg)


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
