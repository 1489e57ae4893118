"""Config loading: every shipped YAML validates; bad values are refused naming file and key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from medprune.config import ExperimentConfig, load_config, save_config
from medprune.errors import ConfigError
from tests.conftest import ROOT, write_yaml

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_configs_folder_is_not_empty() -> None:
    assert len(CONFIGS) >= 7


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name
    assert cfg.model.pretrained is False  # pretrained is a user option, off by default
    assert cfg.model_kwargs()["num_classes"] == len(cfg.data.classes)


def test_resolved_config_round_trips(tmp_path: Path, tiny_config_dict: dict) -> None:
    src = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    cfg = load_config(src)
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert again.data.image_size == (40, 40)
    assert again.optim.schedule.name == "constant"  # defaults are written out in full


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optim.lr", -1, "optim.lr: must be > 0, got -1"),
        ("optim.batch_size", 0, "optim.batch_size: must be >= 1"),
        ("optim.optimizer", "adamx", "optim.optimizer: unknown value 'adamx'; did you mean 'adam'"),
        ("optim.epochs", "ten", "optim.epochs: must be an integer, got 'ten'"),
        ("optim.momentum", 1.5, "optim.momentum: must be in [0, 1)"),
        ("optim.early_stopping.metric", "balanced_acc", "did you mean 'balanced_accuracy'"),
        ("data.channels", "grey", "data.channels: unknown value 'grey'; did you mean 'gray'"),
        ("data.split.val_fraction", 0.9, "data.split.test_fraction: val_fraction + test_fraction must be < 1"),
        ("data.classes", ["healthy"], "data.classes: needs at least 2 classes"),
        ("data.on_bad_sample", "ignore", "data.on_bad_sample: unknown value 'ignore'"),
        ("data.colormap", "infern", "data.colormap: unknown colormap 'infern'; did you mean 'inferno'"),
        ("model.name", "inception_v5", "model.name: unknown model 'inception_v5'; did you mean"),
        ("model.kwargs.widht", 0.5, "model.kwargs.widht: unknown argument of small_cnn 'widht'; did you mean 'width'"),
        ("model.kwargs.num_classes", 5, "model.kwargs.num_classes: is set from data (2); got 5"),
        ("runtime.device", "gpu", "runtime.device: unknown value 'gpu'"),
        ("runtime.workers", -1, "runtime.workers: must be >= 0"),
        ("eval.ci", 1.5, "eval.ci: must be in (0, 1)"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, tiny_config_dict: dict, key: str, value, expected: str) -> None:
    data = copy.deepcopy(tiny_config_dict)
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_unknown_key_suggests_close_name(tmp_path: Path, tiny_config_dict: dict) -> None:
    tiny_config_dict["optim"]["learning_rate"] = 0.1
    tiny_config_dict["optim"].pop("lr")
    path = write_yaml(tmp_path / "bad.yaml", tiny_config_dict)
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.learning_rate: unknown key 'learning_rate'"):
        load_config(path)


def test_unknown_augmentation_is_refused_with_suggestion(tmp_path: Path, tiny_config_dict: dict) -> None:
    tiny_config_dict["data"]["augmentation"] = [{"name": "HorizontalFlipp", "p": 0.5}]
    path = write_yaml(tmp_path / "bad.yaml", tiny_config_dict)
    with pytest.raises(ConfigError, match=r"data.augmentation: .*HorizontalFlip"):
        load_config(path)


def test_missing_sections_and_data_source(tmp_path: Path, tiny_config_dict: dict) -> None:
    del tiny_config_dict["model"]
    with pytest.raises(ConfigError, match=r"model: is required"):
        load_config(write_yaml(tmp_path / "a.yaml", tiny_config_dict))
    cfg = copy.deepcopy(tiny_config_dict)
    cfg["model"] = {"name": "small_cnn"}
    del cfg["data"]["phantom"]
    with pytest.raises(ConfigError, match=r"data.manifest: is required"):
        load_config(write_yaml(tmp_path / "b.yaml", cfg))


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  classes: [a, b\nmodel: x\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+: not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_validated_like_the_file(tmp_path: Path, tiny_config_dict: dict) -> None:
    path = write_yaml(tmp_path / "x.yaml", tiny_config_dict)
    cfg = load_config(path, ["optim.lr=0.001", "optim.schedule.name=cosine", "data.image_size=[48, 56]"])
    assert cfg.optim.lr == pytest.approx(0.001)
    assert cfg.optim.schedule.name == "cosine"
    assert cfg.data.image_size == (48, 56)
    with pytest.raises(ConfigError, match=r"x.yaml: optim.lr: must be > 0, got -1"):
        load_config(path, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"expected key.path=value"):
        load_config(path, ["optim.lr"])
    with pytest.raises(ConfigError, match=r"optim.lrr: unknown key 'lrr'; did you mean 'lr'"):
        load_config(path, ["optim.lrr=0.1"])


def test_early_stopping_metric_direction() -> None:
    from medprune.config import EarlyStoppingConfig
    from medprune.tasks import list_tasks, task_class

    for name in list_tasks():
        cls = task_class(name)
        # a task whose validation computes no loss (torchvision's detectors: losses in train mode only)
        # must not offer it for early stopping
        assert ("loss" in cls.selection_metrics) == cls.validation_loss, name
        assert cls.default_selection in cls.selection_metrics

    assert EarlyStoppingConfig(metric="loss").maximize is False
    assert EarlyStoppingConfig(metric="worst_class_sensitivity").maximize is True


def test_name_defaults_to_file_stem(tmp_path: Path, tiny_config_dict: dict) -> None:
    del tiny_config_dict["name"]
    cfg = load_config(write_yaml(tmp_path / "my_experiment.yaml", tiny_config_dict))
    assert cfg.name == "my_experiment"
    assert cfg.run_dir == Path(tiny_config_dict["runtime"]["out_dir"]) / "my_experiment"


def test_shipped_paper_configs_follow_the_protocol() -> None:
    """Al Husaini et al. 2022: SGD with momentum, lr 1e-4, minibatch 10, 299 px."""
    papers = [p for p in CONFIGS if p.parent.name == "thermography" and p.stem != "demo"]
    assert len(papers) == 6
    for path in papers:
        cfg = load_config(path)
        assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.batch_size) == ("sgdm", 1e-4, 10), path
        assert cfg.data.image_size == (299, 299)
        raw = yaml.safe_load(path.read_text())
        assert raw["data"]["channels"] in path.stem


@pytest.mark.parametrize("name", __import__("medprune.models", fromlist=["list_models"]).list_models("classification"))
def test_image_size_below_the_models_minimum_is_refused_at_load(name: str, tiny_config_dict: dict) -> None:
    from medprune.config import config_from_dict
    from medprune.models import create_model, model_min_input_size, model_signature

    min_h, min_w = model_min_input_size(name)
    model = create_model(name, num_classes=2, in_chans=1, width=0.25)
    assert (min_h, min_w) == tuple(model.min_input_size[1:])  # the declaration matches the built model
    tiny_config_dict["model"] = {"name": name, "kwargs": {"width": 0.25}}
    if "q_dim" in model_signature(name).parameters:  # a model taking the degradation parameter needs its data
        tiny_config_dict["data"]["degradation"] = {"kinds": ["jpeg"]}
    tiny_config_dict["data"]["image_size"] = [max(min_h, 8), max(min_w, 8)]
    config_from_dict(tiny_config_dict, "ok.yaml")
    if min_h > 8:
        tiny_config_dict["data"]["image_size"] = [min_h - 1, min_w]
        with pytest.raises(ConfigError, match=rf"small.yaml: data.image_size: {name} needs inputs of at least "
                                              rf"{min_h}x{min_w} px .*got {min_h - 1}x{min_w}"):
            config_from_dict(tiny_config_dict, "small.yaml")


def test_inception_v3_at_32_px_is_refused_and_aux_logits_needs_299(tiny_config_dict: dict) -> None:
    from medprune.config import config_from_dict

    tiny_config_dict["model"] = {"name": "inception_v3", "kwargs": {"width": 0.125}}
    tiny_config_dict["data"]["image_size"] = 32
    with pytest.raises(ConfigError, match="data.image_size: inception_v3 needs inputs of at least 75x75 px"):
        config_from_dict(tiny_config_dict, "x.yaml")
    tiny_config_dict["data"]["image_size"] = 112
    tiny_config_dict["model"]["kwargs"]["aux_logits"] = True
    with pytest.raises(ConfigError, match="at least 299x299 px"):
        config_from_dict(tiny_config_dict, "x.yaml")


def test_model_and_task_must_match(tiny_config_dict: dict, tiny_seg_config_dict: dict) -> None:
    from medprune.config import config_from_dict

    tiny_config_dict["model"] = {"name": "basic_unet", "kwargs": {"width": 0.25}}
    with pytest.raises(ConfigError, match="x.yaml: model.name: basic_unet is a segmentation model; task "
                                          "classification needs one of .*small_cnn"):
        config_from_dict(tiny_config_dict, "x.yaml")
    tiny_seg_config_dict["model"] = {"name": "small_cnn"}
    with pytest.raises(ConfigError, match="model.name: small_cnn is a classification model; task segmentation "
                                          "needs one of basic_unet, unet"):
        config_from_dict(tiny_seg_config_dict, "x.yaml")


def test_task_options_early_stopping_and_segmentation_data_are_checked(tiny_seg_config_dict: dict) -> None:
    import copy

    from medprune.config import config_from_dict

    cfg = config_from_dict(copy.deepcopy(tiny_seg_config_dict), "s.yaml")
    assert cfg.task == "segmentation" and cfg.optim.early_stopping.metric == "mean_dice"  # the task's default
    assert cfg.build_task().gate_metric == "worst_class_dice"
    bad = copy.deepcopy(tiny_seg_config_dict)
    bad["task_options"] = {"include_backgrund": True}
    with pytest.raises(ConfigError, match="task_options.include_backgrund: .*did you mean 'include_background'"):
        config_from_dict(bad, "s.yaml")
    bad = copy.deepcopy(tiny_seg_config_dict)
    bad["optim"]["early_stopping"] = {"metric": "balanced_accuracy"}
    with pytest.raises(ConfigError, match="optim.early_stopping.metric: unknown segmentation metric "
                                          "'balanced_accuracy'"):
        config_from_dict(bad, "s.yaml")
    bad = copy.deepcopy(tiny_seg_config_dict)
    del bad["data"]["label_classes"]
    with pytest.raises(ConfigError, match="data.label_classes: is required for segmentation"):
        config_from_dict(bad, "s.yaml")
    bad = copy.deepcopy(tiny_seg_config_dict)
    bad["data"]["mask_values"] = {"background": 0, "tissu": 1, "plaque": 2}
    with pytest.raises(ConfigError, match="s.yaml: data.mask_values"):
        config_from_dict(bad, "s.yaml")
    bad = copy.deepcopy(tiny_seg_config_dict)
    bad["data"]["phantom"]["options"] = {"framez": 3}
    with pytest.raises(ConfigError, match="data.phantom.options.framez: .*did you mean 'frames'"):
        config_from_dict(bad, "s.yaml")
