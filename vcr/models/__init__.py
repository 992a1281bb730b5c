"""Models: the project's own (CIFAR ResNet, two-moons MLP, mini models, SSL heads) and timm's.

Importing the package registers every model. One module per job: ``registry``
(``create_model``, ``register_model``), ``resnet_cifar``, ``mlp`` (the two-moons MLP), ``mini`` (timm-shaped mini ResNet/ConvNeXt/ViT), ``ssl_heads`` (projectors,
``SSLModel``), ``backbone_file`` (``save_backbone``/``load_backbone``) and
``torchvision_weights`` (the Table 1 baselines' key maps).
"""

from vcr.models.backbone_file import load_backbone, save_backbone
from vcr.models.mini import mini_convnext, mini_resnet, mini_vit
from vcr.models.mlp import TwoMoonsMLP, two_moons_mlp
from vcr.models.registry import create_model, feature_dim, list_models, register_model
from vcr.models.resnet_cifar import BasicBlockA, CifarResNet, cifar_resnet, cifar_resnet32
from vcr.models.ssl_heads import SSLModel, simclr_projector, vicreg_projector

__all__ = [
    "BasicBlockA",
    "CifarResNet",
    "SSLModel",
    "TwoMoonsMLP",
    "cifar_resnet",
    "cifar_resnet32",
    "create_model",
    "feature_dim",
    "list_models",
    "load_backbone",
    "mini_convnext",
    "mini_resnet",
    "mini_vit",
    "register_model",
    "save_backbone",
    "simclr_projector",
    "two_moons_mlp",
    "vicreg_projector",
]
