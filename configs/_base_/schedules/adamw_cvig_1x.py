# What every ClusterViG detector shares beyond its model: the paper's fine-tuning
# (Sec. V-B: AdamW, lr 2e-4, 12 epochs) on mmdet's 1x schedule (500 warm-up iterations,
# lr x0.1 after epochs 8 and 11) and runtime.
_base_ = [
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmcvig'], allow_failed_imports=False)

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # No decay on norms, biases and the position embedding (as the ImageNet training).
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)}))

# ClusterViG normalises with BatchNorm everywhere, and a GPU holds 2 images of a step:
# in distributed runs every BN takes its statistics over all 16 images (mmengine
# converts BN to SyncBN; a single-process run keeps plain BN).
sync_bn = 'torch'

# The lr above is for 16 images per step (8 GPUs x 2); `--auto-scale-lr` rescales it
# linearly for another total.
auto_scale_lr = dict(base_batch_size=16)
