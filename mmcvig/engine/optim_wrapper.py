import functools
from contextlib import ExitStack, contextmanager
from typing import Any, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

HALF_DTYPES = (torch.float16, torch.bfloat16)


def cpu_autocast_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """``dtype`` (a name or a ``torch.dtype``) as one of the two half types CPU autocast
    runs in, or a ``ValueError`` that names them."""
    valid = CPUAmpOptimWrapper.valid_dtypes
    name = str(dtype).replace('torch.', '')
    if name not in valid:
        raise ValueError(f'CPUAmpOptimWrapper: dtype must be one of {valid}, got {dtype!r}')
    return getattr(torch, name)


def build_loss_scaler(loss_scale: Union[str, float, dict]) -> torch.amp.GradScaler:
    """A CPU ``GradScaler`` from mmengine's ``loss_scale`` spellings: ``'dynamic'``, an
    initial scale (float) or the scaler's keyword arguments (dict)."""
    if loss_scale == 'dynamic':
        return torch.amp.GradScaler('cpu')
    if isinstance(loss_scale, float):
        return torch.amp.GradScaler('cpu', init_scale=loss_scale)
    if isinstance(loss_scale, dict):
        return torch.amp.GradScaler('cpu', **loss_scale)
    raise TypeError(f'loss_scale must be "dynamic", a float or a dict, got {loss_scale!r}')


def half_to_float32(outputs: Any) -> Any:
    """``outputs`` with every float16 or bfloat16 tensor, also inside tuples (named ones
    too), lists and dicts, cast to float32; other tensors and objects as they are."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.dtype in HALF_DTYPES else outputs
    if isinstance(outputs, tuple) and hasattr(outputs, '_fields'):  # a namedtuple
        return type(outputs)(*(half_to_float32(o) for o in outputs))
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(half_to_float32(o) for o in outputs)
    if isinstance(outputs, dict):
        return type(outputs)((k, half_to_float32(v)) for k, v in outputs.items())
    return outputs


def submodules(model: nn.Module, names: Sequence[str]) -> list:
    """The submodules of ``model`` (of the module inside a model wrapper such as DDP)
    that ``names`` (dotted paths, as ``get_submodule``'s) name, or a ``ValueError``
    naming every missing one."""
    if is_model_wrapper(model):
        model = model.module
    found, missing = [], []
    for name in names:
        try:
            found.append(model.get_submodule(name))
        except AttributeError:
            missing.append(name)
    if missing:
        children = ', '.join(name for name, _ in model.named_children())
        raise ValueError(f'CPUAmpOptimWrapper: autocast_modules names {missing}, which '
                         f'{type(model).__name__} has no submodule of (its children: '
                         f'{children})')
    return found


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """Automatic mixed precision on the CPU: forward passes autocast to bfloat16 or
    float16, float16 with loss scaling.

    mmengine 0.10.7's ``AmpOptimWrapper`` refuses to be built without a GPU (or NPU, MLU,
    MUSA), whatever its ``dtype``; ``tools/train.py --amp`` picks this wrapper instead on
    a CPU-only machine. bfloat16 (the default, which CPUs run natively) has float32's
    exponent range, so small gradients do not underflow and need no loss scaling:
    backward and step are then ``OptimWrapper``'s own. float16 gradients do underflow,
    so float16 gets a ``torch.amp.GradScaler('cpu')`` used as ``AmpOptimWrapper`` uses
    its scaler on a GPU (scaled backward, unscale before clipping, a step skipped on
    Inf/NaN gradients, the scaler's state in the wrapper's state dict). This checks what
    a GPU run in float16 does; on most CPUs it is slower than float32.

    ``autocast_modules`` autocasts only the named submodules' forward passes (a
    detector's backbone and neck, say) and casts their half-precision outputs back to
    float32, so that the rest of the model runs in float32: mmcv 2.1's CPU NMS and
    RoIAlign take float32 only, and CPU autocast, unlike CUDA's, runs ``exp`` in the low
    dtype, so the RPN's decoded proposals would be half precision. Their ``forward`` is
    wrapped while :meth:`optim_context` is entered, and restored when it exits, with or
    without an exception. As with ``AmpOptimWrapper``, only the training forward
    (``train_step``, inside ``optim_context``) autocasts; ``val_step`` and ``test_step``
    run in float32.

    Registered in mmengine's root registry, so configs of either scope find it by name
    once ``mmcvig.engine`` is imported.

    Args:
        dtype (str or torch.dtype): ``'bfloat16'`` (default) or ``'float16'``.
        loss_scale (str or float or dict): float16 only, as ``AmpOptimWrapper``'s:
            ``'dynamic'`` (default), a static scale, or ``GradScaler`` arguments.
        autocast_modules (Sequence[str], optional): names (``get_submodule`` paths) of
            the submodules to autocast, of the module inside a model wrapper (DDP) if
            wrapped; a name the model lacks is a ``ValueError`` at the first
            :meth:`optim_context`. None (default) autocasts the whole forward pass.
        **kwargs: ``OptimWrapper``'s arguments.
    """

    valid_dtypes = ('bfloat16', 'float16')

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 autocast_modules: Optional[Sequence[str]] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.cast_dtype = cpu_autocast_dtype(dtype)
        self.autocast_modules = self._module_names(autocast_modules)
        self.loss_scaler: Optional[torch.amp.GradScaler] = None
        # A static scale is passed to every update() so that it never changes.
        self._scale_update_param = loss_scale if isinstance(loss_scale, float) else None
        if self.cast_dtype == torch.float16:
            self.loss_scaler = build_loss_scaler(loss_scale)

    def backward(self, loss: torch.Tensor, **kwargs):
        """Backpropagates the loss, scaled first in float16."""
        if self.loss_scaler is None:
            return super().backward(loss, **kwargs)
        self.loss_scaler.scale(loss).backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs):
        """Steps the optimizer; in float16 through the scaler, which unscales the
        gradients (before clipping, so that clipping sees true norms), skips the step if
        any is Inf/NaN, and updates the scale."""
        if self.loss_scaler is None:
            return super().step(**kwargs)
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)

    def state_dict(self) -> dict:
        """The optimizer's state dict, with the scaler's under ``'loss_scaler'`` in
        float16 (its scale and growth tracker: a resumed run scales as it would have)."""
        state_dict = super().state_dict()
        if self.loss_scaler is not None:
            state_dict['loss_scaler'] = self.loss_scaler.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict):
        """Loads :meth:`state_dict`'s output. A scaler state without a scaler (a float16
        checkpoint resumed in bfloat16) is dropped; a scaler without a state starts
        afresh."""
        state_dict = dict(state_dict)  # the caller's dict keeps its keys
        scaler_state = state_dict.pop('loss_scaler', None)
        if scaler_state is not None and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)

    @staticmethod
    def _module_names(names: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
        if names is None:
            return None
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError('CPUAmpOptimWrapper: autocast_modules must be a sequence of '
                            f'submodule names, got {names!r}')
        if not names:
            raise ValueError('CPUAmpOptimWrapper: autocast_modules is empty: name the '
                             'submodules to autocast, or None for the whole model')
        return tuple(dict.fromkeys(names))  # without repeats, in order

    def _autocast_forward(self, forward):
        """``forward`` autocast, its half-precision outputs cast back to float32."""

        @functools.wraps(forward)
        def autocast_forward(*args, **kwargs):
            with torch.autocast('cpu', dtype=self.cast_dtype):
                outputs = forward(*args, **kwargs)
            return half_to_float32(outputs)

        return autocast_forward

    @contextmanager
    def _autocast_submodules(self, model: nn.Module):
        """The :attr:`autocast_modules` of ``model`` autocast within the context: their
        instance ``forward`` wrapped, and put back as it was on the way out."""
        modules = submodules(model, self.autocast_modules)  # all found, or none wrapped
        modules = list({id(module): module for module in modules}.values())  # aliases
        with ExitStack() as restore:
            for module in modules:
                patched = module.__dict__.get('forward')
                module.forward = self._autocast_forward(module.forward)
                # An instance attribute (a forward already patched) is put back; else
                # the attribute goes and the class's forward shows again.
                if patched is not None:
                    restore.callback(setattr, module, 'forward', patched)
                else:
                    restore.callback(delattr, module, 'forward')
            yield

    @contextmanager
    def optim_context(self, model):
        # torch.autocast, not mmengine.runner.amp.autocast: mmengine's asserts bfloat16
        # on the CPU.
        if self.autocast_modules is None:
            cast = torch.autocast('cpu', dtype=self.cast_dtype)
        else:
            cast = self._autocast_submodules(model)
        with super().optim_context(model), cast:
            yield
