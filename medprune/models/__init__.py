"""Model registry and the models medprune trains.

Build any registered model by name; every constructor takes ``num_classes``, ``in_chans``,
``width`` (channel multiplier), ``pretrained`` and ``drop_rate``::

    from medprune.models import create_model, list_models

    list_models()                    # ['inception_mv4', 'inception_v3', 'inception_v4', 'preresnet56_v2', ...]
    model = create_model("inception_mv4", num_classes=2, in_chans=1, width=0.125)
    model.min_input_size             # (1, 75, 75)
    stage_cost_table(model, (1, 299, 299))   # per-stage channels × positions and MACs
    replace_pooling(model, "wavelet_hybrid", combine="gate")   # swap every downsampling pool

``degradation_aware`` wraps any classification model so it also takes the image's degradation
parameter q (``model(image, q)``, or q packed as extra planes; :mod:`medprune.models.degradation`).

A new model registers itself with ``@register_model("name")`` in a module imported below.
"""

from medprune.models import baseline, degradation, detection, inception, resnet, unet  # noqa: F401  (importing registers the models)
from medprune.models._registry import (MODELS, create_model, list_models, model_input_multiple, model_min_input_size,
                                       model_signature, model_task, register_model)
from medprune.models.cost import StageCost, count_macs, count_params, format_stage_costs, stage_cost_table, total_macs
from medprune.models.baseline import SmallCNN
from medprune.models.degradation import INJECTIONS, DegradationAware, DegradationEstimator
from medprune.models.inception import InceptionV3, InceptionV4
from medprune.models.pooling import POOLINGS, HybridWaveletPool2d, list_poolings, replace_pooling
from medprune.models.resnet import CifarResNet, PreActResNet

__all__ = [
    "MODELS",
    "register_model",
    "create_model",
    "list_models",
    "model_signature",
    "model_min_input_size",
    "model_input_multiple",
    "model_task",
    "StageCost",
    "stage_cost_table",
    "format_stage_costs",
    "count_macs",
    "total_macs",
    "count_params",
    "InceptionV3",
    "InceptionV4",
    "SmallCNN",
    "DegradationAware",
    "DegradationEstimator",
    "INJECTIONS",
    "CifarResNet",
    "PreActResNet",
    "POOLINGS",
    "HybridWaveletPool2d",
    "list_poolings",
    "replace_pooling",
]
