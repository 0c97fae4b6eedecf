"""DeiT-style hard distillation as an mmpretrain classifier (paper Sec. V-B: ClusterViG is
distilled from a RegNetY-16GF teacher)."""
import itertools
import os.path as osp
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn

CKPT_KEY = 'model.teacher_ckpt'


class _Outside:
    """Holds the teacher outside the student's module tree.

    A module assigned to an ``nn.Module`` attribute becomes a submodule: its parameters
    would reach the optimizer, DDP and the parameter counts, its weights the saved state
    dict, and the student's ``.train()`` would put it in training mode. A deep copy of
    the student (mmengine's EMA model) shares the holder, since the teacher is frozen.
    """

    def __init__(self):
        self.module: Optional[nn.Module] = None
        self.loaded = False
        # The teacher's normalisation, (to_rgb, mean, std), float64 on the CPU, read when
        # it is built (before the teacher follows the inputs to another dtype).
        self.norm: Optional[Tuple[bool, Optional[Tensor], Optional[Tensor]]] = None
        # (flip channels, scale, shift) from the student's inputs to the teacher's, or
        # None for none, per (device, dtype) of the inputs: computed on first use there.
        self.renorm: Dict[Tuple[torch.device, torch.dtype],
                          Optional[Tuple[bool, Tensor, Tensor]]] = {}

    def __deepcopy__(self, memo):
        return self


def load_teacher_weights(teacher: nn.Module, filename: Optional[str]) -> None:
    """Load a local checkpoint into ``teacher``, all keys required.

    Accepts mmengine checkpoints (``state_dict``), DeiT's released teacher files
    (``model``), plain state dicts (timm's ``.pth``) and ``.safetensors`` files; a
    ``module.`` prefix (a DDP-wrapped model) is dropped.
    """
    if not filename:
        raise ValueError(f'the teacher has no weights: set {CKPT_KEY} (e.g. --cfg-options '
                         f'{CKPT_KEY}=PATH) to a local checkpoint file of the teacher')
    if not osp.isfile(filename):
        raise FileNotFoundError(f'teacher checkpoint {filename!r} not found (nothing is '
                                f'downloaded): set {CKPT_KEY} to a local checkpoint file')
    if filename.endswith('.safetensors'):
        from safetensors.torch import load_file
        state_dict = load_file(filename)
    else:
        # weights_only: a checkpoint is untrusted input (mmcvig.compat allow-lists what
        # mmengine's own checkpoints hold beyond tensors).
        checkpoint = torch.load(filename, map_location='cpu', weights_only=True)
        state_dict = checkpoint
        for key in ('state_dict', 'model'):
            if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
                state_dict = checkpoint[key]
                break
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    teacher.load_state_dict(state_dict, strict=True)


def _normalisation(preprocessor) -> Tuple[bool, Optional[Tensor], Optional[Tensor]]:
    """(to_rgb, mean, std) of an mmpretrain data preprocessor, mean/std copied to the CPU
    in float64 (wherever the preprocessor is); mean/std ``None`` when it does not
    normalise."""
    to_rgb = bool(getattr(preprocessor, 'to_rgb', False))
    if not getattr(preprocessor, '_enable_normalize', False):
        return to_rgb, None, None
    mean, std = (v.detach().to('cpu', torch.float64)
                 for v in (preprocessor.mean, preprocessor.std))
    return to_rgb, mean, std


def _follow(module: nn.Module, x: Tensor) -> nn.Module:
    """Move ``module`` to the device of ``x``, and its floating-point parameters and
    buffers to the dtype of ``x`` (a floating-point ``x``), if it is not there yet."""
    dtype = x.dtype if x.is_floating_point() else None
    first = next((t for t in itertools.chain(module.parameters(), module.buffers())
                  if t.is_floating_point()), None)
    if first is not None and (first.device != x.device or
                              dtype not in (None, first.dtype)):
        module.to(device=x.device, dtype=dtype)
    return module


@MODELS.register_module()
class HardDistillationClassifier(ImageClassifier):
    """An :class:`ImageClassifier` whose distillation classifier learns from a teacher
    (DeiT's hard distillation).

    In training, the frozen teacher classifies the very batch the student gets, after the
    data preprocessor's batch augmentations (Mixup/CutMix), and the head trains ``fc`` on
    the labels with weight ``1 - distill_weight`` and ``fc_dist`` on the teacher's argmax
    (cross-entropy, no label smoothing) with weight ``distill_weight``. At test time the
    head averages its two classifiers; the teacher is not run.

    The teacher is built on first use and its weights are loaded by :meth:`init_weights`
    (which mmengine's Runner calls before training), so the student alone builds, counts
    and tests without the teacher or its checkpoint. The teacher is kept out of the module
    tree: it is in eval mode whatever ``.train()`` is called with, has no gradients, is in
    no optimizer, moves to the inputs' device and dtype (the student's) when it runs, and
    is left out of the state dict unless ``save_teacher=True``.

    If the teacher's data preprocessor normalises (``mean``/``std``, ``to_rgb``), the
    student's inputs are converted to that normalisation first: the same pixels, as the
    teacher was trained to see them. Otherwise it gets the student's inputs as they are.

    Args:
        backbone, neck, head, pretrained, train_cfg, data_preprocessor, init_cfg: as
            :class:`ImageClassifier`. The head needs a distillation classifier
            (``ClusterViGClsHead(distillation=True)``) when there is a teacher.
        teacher (dict | str | nn.Module, optional): an mmpretrain classifier config
            (e.g. ``dict(type='TimmClassifier', model_name='regnety_160')``), the path of
            an mmpretrain config file whose ``model`` is the teacher, or a module mapping
            :math:`(B, 3, H, W)` images to :math:`(B, K)` logits. ``None``: no
            distillation, both classifiers are trained on the labels.
        teacher_ckpt (str, optional): local checkpoint of the teacher (see
            :func:`load_teacher_weights`). Required for training with a teacher.
        distill_weight (float): weight of the distillation loss (DeiT's alpha, 0.5).
        save_teacher (bool): also save the teacher's weights, under ``teacher.``, in the
            state dict (so that a checkpoint is self-contained).
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 teacher: Union[dict, str, nn.Module, None] = None,
                 teacher_ckpt: Optional[str] = None,
                 distill_weight: float = 0.5,
                 save_teacher: bool = False,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(backbone, neck=neck, head=head, pretrained=pretrained,
                         train_cfg=train_cfg, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if teacher is not None and getattr(self.head, 'fc_dist', None) is None:
            raise ValueError('distillation needs a head with a distillation classifier '
                             '(head.distillation=True), or model.teacher=None')
        if not 0 <= distill_weight <= 1:
            raise ValueError(f'distill_weight must be in [0, 1], got {distill_weight}')
        self.teacher_cfg = teacher
        self.teacher_ckpt = teacher_ckpt
        self.distill_weight = distill_weight
        self.save_teacher = save_teacher
        self._teacher = _Outside()
        self._register_state_dict_hook(self._add_teacher_state)
        # Always: a checkpoint saved with the teacher also loads into a student without.
        self._register_load_state_dict_pre_hook(self._pop_teacher_state)

    # ------------------------------------------------------------------------ teacher
    @property
    def with_teacher(self) -> bool:
        return self.teacher_cfg is not None

    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher, built on first access (``None`` without distillation)."""
        if self.teacher_cfg is None:
            return None
        if self._teacher.module is None:
            self._teacher.module = self._build_teacher(self.teacher_cfg)
        return self._teacher.module

    def _build_teacher(self, cfg: Union[dict, str, nn.Module]) -> nn.Module:
        if isinstance(cfg, str):
            cfg = Config.fromfile(cfg)['model']
        teacher = cfg if isinstance(cfg, nn.Module) else MODELS.build(cfg)
        teacher.requires_grad_(False).eval()
        self._teacher.norm = _normalisation(getattr(teacher, 'data_preprocessor', None))
        self._teacher.renorm = {}
        return teacher

    def _renorm(self, x: Tensor) -> Optional[Tuple[bool, Tensor, Tensor]]:
        """``(flip, scale, shift)`` from the student's inputs ``x`` to the teacher's, on
        the device and in the dtype of ``x``; ``None`` for none.

        Computed at use rather than when the teacher is built: the Runner moves the
        student to its device before ``init_weights`` builds the teacher on the CPU, and
        the student may move again. Once per device and dtype of the inputs: the identity
        test reads the values on the host."""
        key = (x.device, x.dtype)
        if key not in self._teacher.renorm:
            renorm = self._renorm_on_cpu()
            if renorm is not None:
                flip, scale, shift = renorm
                renorm = flip, scale.to(x), shift.to(x)
            self._teacher.renorm[key] = renorm
        return self._teacher.renorm[key]

    def _renorm_on_cpu(self) -> Optional[Tuple[bool, Tensor, Tensor]]:
        """:meth:`_renorm_params` in float64 on the CPU, from the student's normalisation
        as it is now and the teacher's as it was built."""
        s_rgb, s_mean, s_std = _normalisation(self.data_preprocessor)
        t_rgb, t_mean, t_std = self._teacher.norm
        if t_mean is None:  # the teacher gets the student's inputs as they are
            return None
        s_mean = torch.zeros(3, 1, 1, dtype=torch.float64) if s_mean is None else s_mean
        s_std = torch.ones(3, 1, 1, dtype=torch.float64) if s_std is None else s_std
        return self._renorm_params(s_rgb != t_rgb, s_mean, s_std, t_mean, t_std)

    @staticmethod
    def _renorm_params(flip: bool, s_mean: Tensor, s_std: Tensor, t_mean: Tensor,
                       t_std: Tensor) -> Optional[Tuple[bool, Tensor, Tensor]]:
        """``(flip, scale, shift)`` such that the teacher's input, ``(flip?(x * s_std +
        s_mean) - t_mean) / t_std``, is ``flip?(x) * scale + shift``; ``None`` when that
        is the identity. Means and stds are :math:`(3, 1, 1)`, each in its preprocessor's
        channel order (after its ``to_rgb``)."""
        if flip:  # the teacher's channel c is the student's channel 2 - c
            s_mean, s_std = s_mean.flip(0), s_std.flip(0)
        scale, shift = s_std / t_std, (s_mean - t_mean) / t_std
        if not flip and torch.allclose(scale, torch.ones_like(scale)) and \
                torch.allclose(shift, torch.zeros_like(shift)):
            return None
        return flip, scale, shift

    def init_weights(self):
        """The student's own initialisation, then the teacher's checkpoint."""
        super().init_weights()
        if self.with_teacher and not self._teacher.loaded:
            self.load_teacher()

    def load_teacher(self, filename: Optional[str] = None) -> None:
        """Load the teacher's weights from ``filename`` (default: ``teacher_ckpt``)."""
        filename = filename or self.teacher_ckpt
        load_teacher_weights(self.teacher, filename)
        self._teacher.loaded = True
        print_log(f'distillation teacher loaded from {filename}', logger='current')

    def train(self, mode: bool = True):
        """Sets the student's mode; the teacher stays in eval mode."""
        super().train(mode)
        if self._teacher.module is not None:
            self._teacher.module.eval()
        return self

    @torch.no_grad()
    def teacher_labels(self, inputs: Tensor) -> Tensor:
        """:math:`(B, 3, H, W)` student inputs -> :math:`(B, )` the teacher's classes."""
        teacher = self.teacher
        if not self._teacher.loaded:
            raise RuntimeError(f'the teacher has no weights yet: call init_weights() (the '
                               f'Runner does) or load_teacher(), with {CKPT_KEY} set')
        # The student's device and dtype now, which the teacher, built on the CPU, may
        # not have (the Runner moves the student before init_weights builds it).
        teacher, x = _follow(teacher, inputs), inputs
        renorm = self._renorm(inputs)
        if renorm is not None:
            flip, scale, shift = renorm
            x = (x.flip(1) if flip else x) * scale + shift
        logits = teacher(x, mode='tensor') if isinstance(teacher, BaseModel) else teacher(x)
        num_classes = getattr(self.head, 'num_classes', logits.shape[-1])
        if logits.dim() != 2 or logits.shape[1] != num_classes:
            raise ValueError(f'the teacher gives logits of shape {tuple(logits.shape)}, the '
                             f'student {num_classes} classes')
        return logits.argmax(1)

    # --------------------------------------------------------------------------- loss
    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> dict:
        """Losses of a batch: ``inputs`` :math:`(B, 3, H, W)` after the data
        preprocessor (batch augmentations included), seen by teacher and student."""
        if not self.with_teacher:
            return super().loss(inputs, data_samples)
        teacher_labels = self.teacher_labels(inputs)
        feats = self.extract_feat(inputs)
        return self.head.loss(feats, data_samples, teacher_labels=teacher_labels,
                              distill_weight=self.distill_weight)

    # --------------------------------------------------------------------- state dict
    def _add_teacher_state(self, module, state_dict, prefix, local_metadata):
        if self.save_teacher and self.with_teacher:
            for key, value in self.teacher.state_dict().items():
                state_dict[f'{prefix}teacher.{key}'] = value
        return state_dict

    def _pop_teacher_state(self, state_dict, prefix, local_metadata, strict, missing_keys,
                           unexpected_keys, error_msgs):
        start = f'{prefix}teacher.'
        keys = [k for k in state_dict if k.startswith(start)]
        teacher_state = {k[len(start):]: state_dict.pop(k) for k in keys}
        if teacher_state and self.with_teacher:
            self.teacher.load_state_dict(teacher_state, strict=True)
            self._teacher.loaded = True
