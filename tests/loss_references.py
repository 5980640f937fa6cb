"""Naive versions of the three losses of lessons 02-04 for the tests of their checks, each with switches that make
the typical mistakes."""
import torch
import torch.nn.functional as F


def masks(labels, include_self=False):
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    return (same if include_self else same & ~eye), ~same


def distances(embeddings, normalize=True):
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    return torch.cdist(x, x)


def avg_nonzero(values):
    nonzero = values > 0
    return values[nonzero].sum() / nonzero.sum() if nonzero.any() else values.sum() * 0


def contrastive(embeddings, labels, pos_margin=0.0, neg_margin=1.0, normalize=True, reduce=avg_nonzero,
                sign=1, together=False):
    d = distances(embeddings, normalize)
    pos, neg = masks(labels)
    pos_terms = F.relu(d[pos] - pos_margin)
    neg_terms = F.relu(sign * (neg_margin - d[neg]))
    if together:
        return reduce(torch.cat([pos_terms, neg_terms]))
    return reduce(pos_terms) + reduce(neg_terms)


def triplet(embeddings, labels, margin=0.05, normalize=True, reduce=avg_nonzero, sign=1, include_self=False):
    d = distances(embeddings, normalize)
    pos, neg = masks(labels, include_self)
    a, p, n = torch.where(pos[:, :, None] & neg[:, None, :])
    return reduce(F.relu(sign * (d[a, p] - d[a, n]) + margin))


def circle(embeddings, labels, m=0.4, gamma=80, normalize=True, include_self=False, all_anchors=False,
           detach=True, euclidean=False):
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    s = -torch.cdist(x, x) if euclidean else x @ x.T
    pos, neg = masks(labels, include_self)
    w = s.detach() if detach else s
    logit_p = (-gamma * F.relu(1 + m - w) * (s - (1 - m))).masked_fill(~pos, float("-inf"))
    logit_n = (gamma * F.relu(w + m) * (s - m)).masked_fill(~neg, float("-inf"))
    loss = F.softplus(torch.logsumexp(logit_p, 1) + torch.logsumexp(logit_n, 1))
    valid = pos.any(1) & neg.any(1)
    return loss.nan_to_num(0, 0, 0).mean() if all_anchors else loss[valid].mean()
