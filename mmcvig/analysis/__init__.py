"""Measurement code: complexity counts, timing, DEGC profiles, detection-scale costs.

The tools under ``tools/analysis_tools`` parse arguments and write files; what they
measure lives here, importable and unit-tested.
"""
from .benchmark import (add_scaling_ratios, kappa_at, measure_scaling, measure_throughput, speedups,
                        tokens_at)
from .complexity import count_conv_macs, count_full_macs, count_params
from .detection import (INFERENCE_SHAPE, TRAIN_SHAPE, allocation_peak, measure_detection,
                        measure_detection_tables, peak_memory, state_bytes)
from .host_sync import HostSyncCounter
from .models import (CVIG_DETECTION_CONFIGS, DETECTION_PEERS, PEERS, SIZE_SUFFIX, Candidate,
                     config_candidate, cvig_candidate, detection_candidates,
                     detection_cvig_candidate, peer_candidates, scaling_candidates, with_peers)
from .partitions import partition_records
from .precision import (AUTOCAST_DTYPES, autocast_reaches_degc, calibrate_norms, largest_activation,
                        measure_autocast_error, measure_float32_overhead, relative_errors)
from .profiling import (DEGC_STEPS, OTHER, gemm_rate, isolated_step_times, kmeans_iterations,
                        knn_macs, measure_profile, operator_table, profile_degc, step_times)
from .timing import Runner, paired_ratio, round_robin, summarize, warm_up

__all__ = [
    'count_conv_macs', 'count_full_macs', 'count_params', 'Runner', 'round_robin', 'warm_up',
    'summarize', 'paired_ratio', 'Candidate', 'SIZE_SUFFIX', 'PEERS', 'DETECTION_PEERS',
    'CVIG_DETECTION_CONFIGS', 'cvig_candidate', 'peer_candidates', 'with_peers',
    'scaling_candidates', 'config_candidate', 'detection_cvig_candidate',
    'detection_candidates', 'measure_throughput', 'speedups', 'measure_scaling',
    'add_scaling_ratios', 'tokens_at', 'kappa_at', 'DEGC_STEPS', 'OTHER', 'step_times',
    'operator_table', 'kmeans_iterations', 'profile_degc', 'measure_profile',
    'isolated_step_times', 'knn_macs', 'gemm_rate',
    'TRAIN_SHAPE', 'INFERENCE_SHAPE', 'allocation_peak', 'peak_memory', 'state_bytes',
    'measure_detection', 'measure_detection_tables', 'partition_records', 'HostSyncCounter',
    'AUTOCAST_DTYPES', 'calibrate_norms', 'largest_activation', 'measure_autocast_error',
    'relative_errors', 'autocast_reaches_degc', 'measure_float32_overhead'
]
