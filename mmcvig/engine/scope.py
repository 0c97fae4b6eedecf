"""What tools/train.py and tools/test.py share: the config's scope, launcher args and
distributed runs on the CPU."""
import os

SCOPES = ('mmdet', 'mmpretrain', 'mmseg')


def scope_of(cfg) -> str:
    """The OpenMMLab package the config builds from: 'mmdet', 'mmpretrain' or 'mmseg'."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'default_scope must be one of {SCOPES}, got {scope!r} '
                         f'in {cfg.filename}')
    return scope


def register_modules(scope: str):
    """Import the scope's modules into its registries before the Runner is built, so a
    broken install fails here, with its own import error, rather than as a lookup miss."""
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules, setup_cache_size_limit_of_dynamo

        # Fewer repeated compilations when the config asks for torch.compile.
        setup_cache_size_limit_of_dynamo()
    elif scope == 'mmseg':
        from mmseg.utils import register_all_modules
    else:
        from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)


def enable_cpu_distributed(cfg):
    """Distributed runs without GPUs: gloo instead of nccl, and a DDP wrapper that
    accepts a CPU module (see mmcvig.engine.CPUDistributedDataParallel)."""
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})  # keeps e.g. find_unused_parameters
    wrapper['type'] = 'CPUDistributedDataParallel'
    cfg.model_wrapper_cfg = wrapper


def add_launcher_args(parser):
    """``--launcher`` and the local rank torch's launchers pass."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed launchers of PyTorch >= 2.0 pass `--local-rank`, older ones
    # `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args):
    """mmengine reads the local rank from the environment only."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
