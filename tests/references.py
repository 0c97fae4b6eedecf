"""Plain references the tests hold DEGC against; torch only, so that the CUDA tests
(tools/gpu_check.py, on a machine without mmcv's ops) import them too."""
import torch.nn.functional as F


def brute_force_knn(x, labels, k, padding=None):
    """Reference: per token, the k most similar (cosine) tokens of its cluster, self first;
    padding tokens (label ``padding``) have none."""
    feats = F.normalize(x, dim=-1)
    out = {}
    for b in range(x.shape[0]):
        for n in range(x.shape[1]):
            if labels[b, n] == padding:
                out[b, n] = set()
                continue
            members = (labels[b] == labels[b, n]).nonzero().flatten()
            sim = feats[b, members] @ feats[b, n]
            sim[members == n] = float('inf')
            top = sim.topk(min(k, len(members))).indices
            out[b, n] = set(members[top].tolist())
    return out
