"""Save and restore the random number generators with every checkpoint."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Makes a resumed run continue exactly where the saved one stopped.

    mmengine 0.10.7 re-seeds on resume but does not restore the generators' states, so
    the draws after a resume (RPN/RoI sampling, augmentations in the main process,
    dropout) differ from those of an uninterrupted run. This hook stores the states of
    torch's, numpy's and Python's generators under ``checkpoint['rng_state']`` and
    restores them when a checkpoint is resumed. The numpy state is stored as a tensor
    and plain values so that the checkpoint still loads under torch's ``weights_only``
    unpickler.
    """
    priority = 'VERY_LOW'  # restore after anything that seeds in after_load_checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint['rng_state'] = dict(
            torch=torch.get_rng_state(),
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
