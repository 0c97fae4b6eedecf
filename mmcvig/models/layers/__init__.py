from .bicubic import bicubic_matrix, bicubic_resize
from .norm_act import conv_norm_act, norm_act

__all__ = ['bicubic_matrix', 'bicubic_resize', 'conv_norm_act', 'norm_act']
