from .norm_act import conv_norm_act, norm_act

__all__ = ['conv_norm_act', 'norm_act']
