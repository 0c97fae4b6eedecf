"""Save and restore the random number generators with every checkpoint."""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
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


def process_states() -> dict:
    """The states of this process's generators: torch's CPU and CUDA ones, numpy's and
    Python's. numpy's as a tensor and plain values, so that a checkpoint holding them
    still loads under torch's ``weights_only`` unpickler."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return dict(
        torch=torch.get_rng_state(),
        cuda=_cuda_states(),
        numpy=(name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
               float(cached)),
        python=random.getstate())


def _saves_now(runner, by_epoch: bool) -> bool:
    """Whether mmengine's CheckpointHook saves a checkpoint at this end of an iteration
    (``by_epoch`` False) or of an epoch, by its own rules."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook) and hook.by_epoch == by_epoch:
            if by_epoch:
                return (hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                        or (hook.save_last and hook.is_last_train_epoch(runner)))
            return (hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                    or (hook.save_last and hook.is_last_train_iter(runner)))
    return False


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Makes a resumed run continue exactly where the saved one stopped.

    mmengine 0.10.7 re-seeds on resume but does not restore the generators' states, so
    the draws after a resume (RPN/RoI sampling, augmentations in the main process,
    dropout, DropPath and k-means initialisation on a GPU) differ from those of an
    uninterrupted run. This hook stores the states of torch's CPU and CUDA generators,
    numpy's and Python's under ``checkpoint['rng_state']`` and restores them when a
    checkpoint is resumed.

    In a distributed run every process draws its own samples, so every process gets its
    own states back: only the first process writes checkpoints, so when
    ``CheckpointHook`` is about to save one, the states of all processes are gathered
    to it (``rng_state['ranks']``). A checkpoint resumed with another number of
    processes, or one saved where the gathered states are not current (a best
    checkpoint saved after validation), restores the first process's states everywhere,
    with a warning for the former.

    A checkpoint resumes on another machine too: on one without CUDA, or with another
    number of GPUs, the CUDA states restored are those of the devices both have, with a
    warning (the other generators are restored as usual); a checkpoint of an older
    version, without CUDA states, resumes with the CUDA generators as mmengine seeded
    them.
    """
    # Before CheckpointHook (VERY_LOW) at the end of an iteration or epoch, so that the
    # states are gathered before it saves.
    priority = 'LOW'

    def __init__(self):
        self._gathered = None  # ((epoch, iter), [states of every process]) to save next

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        self._gather_before_saving(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_before_saving(runner, by_epoch=True)

    def _gather_before_saving(self, runner, by_epoch: bool) -> None:
        if get_dist_info()[1] > 1 and _saves_now(runner, by_epoch):
            # A collective: every process decides alike, from the same counters.
            self._gathered = ((runner.epoch, runner.iter), all_gather_object(process_states()))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = state = process_states()
        gathered, self._gathered = self._gathered, None
        if gathered is not None and gathered[0] == (runner.epoch, runner.iter):
            state['ranks'] = gathered[1]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        if state is None:
            runner.logger.warning('RNGStateHook: the checkpoint holds no generator states; '
                                  'the resumed run will not repeat an uninterrupted one')
            return
        state = self._own_states(runner, state)
        torch.set_rng_state(state['torch'])
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state['python'])
        self._restore_cuda(runner, state.get('cuda'))

    @staticmethod
    def _own_states(runner, state: dict) -> dict:
        """The states saved by this process's rank, where the checkpoint has one for
        every process of this run; else those of the process that saved it."""
        ranks = state.get('ranks')
        rank, world_size = get_dist_info()
        if ranks is None:
            if world_size > 1:
                runner.logger.warning(
                    'RNGStateHook: the checkpoint holds the generator states of the saving '
                    'process only; every process restores those')
            return state
        if len(ranks) != world_size:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds the generator states of {len(ranks)} '
                f'processes, this run has {world_size}: every process restores those of '
                'the first')
            return state
        return ranks[rank]

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
