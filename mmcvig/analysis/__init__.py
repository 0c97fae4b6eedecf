from .complexity import count_conv_macs, count_full_macs, count_params

__all__ = ['count_conv_macs', 'count_full_macs', 'count_params']
