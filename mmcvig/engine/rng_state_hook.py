"""Save and restore the random number generators with every checkpoint."""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import Tensor


def _cuda_in_use() -> bool:
    """Whether this process has initialised CUDA. Without it no CUDA generator has drawn
    anything, and asking for their states would initialise CUDA (a context, hundreds of
    MiB of GPU memory) in a run that trains on the CPU."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _cuda_states() -> List[Tensor]:
    """The states of the CUDA generators, one ByteTensor per device (none without
    CUDA)."""
    return list(torch.cuda.get_rng_state_all()) if _cuda_in_use() else []


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Makes a resumed run continue exactly where the saved one stopped.

    mmengine 0.10.7 re-seeds on resume but does not restore the generators' states, so
    the draws after a resume (RPN/RoI sampling, augmentations in the main process,
    dropout, DropPath and k-means initialisation on a GPU) differ from those of an
    uninterrupted run. This hook stores the states of torch's CPU and CUDA generators,
    numpy's and Python's under ``checkpoint['rng_state']`` and restores them when a
    checkpoint is resumed. The numpy state is stored as a tensor and plain values so that
    the checkpoint still loads under torch's ``weights_only`` unpickler.

    A checkpoint resumes on another machine too: on one without CUDA, or with another
    number of GPUs, the CUDA states restored are those of the devices both have, with a
    warning (the other generators are restored as usual); a checkpoint of an older
    version, without CUDA states, resumes with the CUDA generators as mmengine seeded
    them. In a distributed run every process restores the states saved by the first one
    (the one that writes the checkpoint).
    """
    priority = 'VERY_LOW'  # restore after anything that seeds in after_load_checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint['rng_state'] = dict(
            torch=torch.get_rng_state(),
            cuda=_cuda_states(),
            numpy=(name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                   float(cached)),
            python=random.getstate())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        if state is None:
            runner.logger.warning('RNGStateHook: the checkpoint holds no generator states; '
                                  'the resumed run will not repeat an uninterrupted one')
            return
        torch.set_rng_state(state['torch'])
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state['python'])
        self._restore_cuda(runner, state.get('cuda'))

    @staticmethod
    def _restore_cuda(runner, states: Optional[List[Tensor]]) -> None:
        """Restore the CUDA generators' states that have a device here; warn about the
        others. ``None``: a checkpoint saved before CUDA states were stored."""
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
        if states is None:
            if available:
                runner.logger.warning(
                    'RNGStateHook: the checkpoint holds no CUDA generator states (saved by '
                    'an older version); they keep the states mmengine seeded')
            return
        if states and len(states) != count:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds the CUDA generator states of '
                f'{len(states)} devices, this process sees {count}: restoring those of '
                f'the first {min(count, len(states))}')
        states = states[:count]
        if not states:
            return
        try:
            # Lazy: before CUDA is initialised, the states are set when it is.
            torch.cuda.set_rng_state_all(states)
        except (RuntimeError, TypeError, ValueError) as error:
            runner.logger.warning(
                f'RNGStateHook: the CUDA generator states were not restored ({error})')
