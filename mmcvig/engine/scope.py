"""What tools/train.py and tools/test.py share: the common command line, the config's
scope, the work directory, distributed runs on the CPU and building the Runner."""
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.device import get_device
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..compat import init_dist_without_cuda

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


def add_common_args(parser):
    """``--cfg-options``, ``--launcher`` and the local rank torch's launchers pass."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed launchers of PyTorch >= 2.0 pass `--local-rank`, older ones
    # `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args):
    """mmengine reads the local rank from the environment only."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def load_config(args):
    """``(cfg, scope)``: ``args.config`` with ``--cfg-options`` merged first (they may
    change ``default_scope``), the scope's modules registered."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = scope_of(cfg)
    register_modules(scope)
    return cfg, scope


def merge_launch_args(cfg, args):
    """The launcher and the work directory of the command line (default: the config's,
    else work_dirs/<config name>); gloo and a CPU-capable DDP wrapper for a distributed
    run on the CPU."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.launcher != 'none' and get_device() == 'cpu':
        enable_cpu_distributed(cfg)


def build_runner(cfg):
    """The config's Runner (``runner_type``, else mmengine's), in the process group of
    ``cfg.launcher``: mmengine 0.10.7 cannot start torchrun processes without a GPU
    (mmcvig/compat.py), so they start here and the Runner keeps the group it finds."""
    init_dist_without_cuda(cfg.launcher, **cfg.get('env_cfg', {}).get('dist_cfg', {}))
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
