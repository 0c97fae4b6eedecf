"""ClusterViG classification head (paper Fig. 4d; MODEL_SPEC "Classification head")."""
from typing import List, Optional, Tuple, Union

import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from ...registry import register_model


@register_model
class ClusterViGClsHead(ClsHead):
    """Global average pool -> 1x1 conv to ``hidden_channels`` + BN + GELU -> dropout ->
    linear to ``num_classes``.

    With ``distillation=True`` a second linear classifier (the distillation token head of
    DeiT-style training) is added. At test time the two logits are averaged. In training
    both are returned by :meth:`forward`. :meth:`loss` trains the distillation classifier
    on the teacher's hard labels when it is given them (DeiT's hard distillation, see
    :class:`~mmcvig.models.HardDistillationClassifier`), and on the data samples' labels,
    like the main one, when it is not.

    Args:
        num_classes (int): number of categories.
        in_channels (int): channels of the backbone's last feature map.
        hidden_channels (int): width of the hidden 1x1 conv (1024 in the paper).
        dropout (float): dropout before the classifier(s).
        distillation (bool): add the distillation classifier.
    """

    def __init__(self, num_classes: int, in_channels: int, hidden_channels: int = 1024,
                 dropout: float = 0., distillation: bool = False, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='GELU'), init_cfg=dict(type='TruncNormal', layer='Linear',
                                                          std=.02), **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.distillation = distillation
        self.hidden = ConvModule(in_channels, hidden_channels, 1, bias=True, norm_cfg=norm_cfg,
                                 act_cfg=act_cfg)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_channels, num_classes)
        self.fc_dist = nn.Linear(hidden_channels, num_classes) if distillation else None

    def pre_logits(self, feats: Tuple[Tensor]) -> Tensor:
        """feats[-1]: :math:`(B, C, H, W)` or pooled :math:`(B, C)` -> :math:`(B, 1024)`."""
        x = feats[-1]
        if x.dim() == 2:
            x = x[..., None, None]
        # A mean rather than adaptive_avg_pool2d, whose backward raises on CUDA under
        # torch.use_deterministic_algorithms(True).
        x = x.mean((2, 3), keepdim=True)
        return self.dropout(self.hidden(x).flatten(1))

    def forward(self, feats: Tuple[Tensor]) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        hidden = self.pre_logits(feats)
        logits = self.fc(hidden)
        if self.fc_dist is None:
            return logits
        logits_dist = self.fc_dist(hidden)
        if self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def loss(self, feats: Tuple[Tensor], data_samples: List[DataSample],
             teacher_labels: Optional[Tensor] = None, distill_weight: float = 0.5,
             **kwargs) -> dict:
        """Losses of a training batch.

        Args:
            feats (tuple[Tensor]): backbone features, the last :math:`(B, C, H, W)`.
            data_samples (list[DataSample]): ground truth labels (or Mixup/CutMix scores).
            teacher_labels (Tensor, optional): :math:`(B, )` class indices, the teacher's
                argmax on the same images. Given, ``fc`` is trained on the labels with
                weight ``1 - distill_weight`` and ``fc_dist`` on these with plain
                cross-entropy and weight ``distill_weight`` (DeiT's hard distillation).
                Not given, both classifiers are trained on the labels, each with weight 1.
            distill_weight (float): DeiT's alpha, 0.5 in DeiT.

        Returns:
            dict[str, Tensor]: ``loss`` (and ``loss_dist`` with the distillation
            classifier).
        """
        outs = self(feats)
        if self.fc_dist is None:
            if teacher_labels is not None:
                raise ValueError('teacher labels need a distillation classifier: set '
                                 'head.distillation=True')
            return self._get_loss(outs, data_samples, **kwargs)
        logits, logits_dist = outs
        losses = self._get_loss(logits, data_samples, **kwargs)
        if teacher_labels is None:
            losses['loss_dist'] = self._get_loss(logits_dist, data_samples, **kwargs)['loss']
            return losses
        # DeiT: no label smoothing on the hard teacher targets.
        losses['loss'] = (1 - distill_weight) * losses['loss']
        losses['loss_dist'] = distill_weight * F.cross_entropy(logits_dist, teacher_labels)
        return losses

    def predict(self, feats: Tuple[Tensor],
                data_samples: Optional[List[Optional[DataSample]]] = None) -> List[DataSample]:
        logits = self(feats)
        if isinstance(logits, tuple):  # predict() called in train mode
            logits = sum(logits) / 2
        return self._get_predictions(logits, data_samples)
