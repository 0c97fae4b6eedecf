# The paper's detection fine-tuning (adamw_cvig_1x.py: AdamW lr 2e-4, 12 epochs, no
# decay on norms, biases and pos_embed) with ViTDet's layer-wise lr decay on top: an
# OPTION, not the paper's recipe. The neck and heads train at the base lr, ClusterViG's
# last block at lr x rate, ..., its stem and pos_embed at lr x rate^(num_blocks + 1)
# (mmcvig.engine.LayerDecayOptimWrapperConstructor). Use it in place of adamw_cvig_1x.py
# among a config's bases, or on any detector config:
#   --cfg-options optim_wrapper.constructor=LayerDecayOptimWrapperConstructor \
#       optim_wrapper.paramwise_cfg.layer_decay_rate=0.7
_base_ = './adamw_cvig_1x.py'

optim_wrapper = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    # ViTDet's rate for its 12-block ViT-B (0.8 for 24 blocks, 0.9 for 32); CViG-Ti has 12
    # blocks, S and B 16. Not tuned on ClusterViG.
    paramwise_cfg=dict(layer_decay_rate=0.7))
