"""Token-budget batches from length buckets, reshuffled every epoch and deterministic for a seed.

Sentences are put in random order and then stably sorted by (target length, source length); consecutive runs
of that order become batches whose padded size `n * max(longest source, longest target)` stays within
`max_tokens`. Batch order is then shuffled. Everything depends only on (seed, epoch), so a resumed run sees
the same batches, and each data-parallel rank takes a disjoint, equally long slice of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    src: torch.Tensor  # (B, S) source ids + eos, right-padded
    tgt_in: torch.Tensor  # (B, T) bos + target ids, right-padded
    tgt_out: torch.Tensor  # (B, T) target ids + eos, right-padded
    indices: list[int]  # positions in the corpus
    pad_id: int = 0

    @property
    def n_tgt_tokens(self) -> int:
        return int((self.tgt_out != self.pad_id).sum())

    def to(self, device: torch.device | str) -> Batch:
        dev = torch.device(device)
        return Batch(
            self.src.to(dev, non_blocking=True),
            self.tgt_in.to(dev, non_blocking=True),
            self.tgt_out.to(dev, non_blocking=True),
            self.indices,
            self.pad_id,
        )


def make_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Index lists of one epoch's batches (lengths include the eos/bos token)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(src_lens))
    order = order[np.lexsort((src_lens[order], tgt_lens[order]))]  # sort by tgt, then src; ties stay random
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order.tolist():
        n = max(int(src_lens[i]), int(tgt_lens[i]))
        if cur and (len(cur) + 1) * max(longest, n) > max_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    perm = rng.permutation(len(batches))
    return [batches[j] for j in perm]


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """Rank r of w takes batches r, r+w, ...; the tail is cut so that every rank runs the same number of steps."""
    n = len(batches) // world * world
    return batches[rank:n:world]


def collate(
    src: list[np.ndarray], tgt: list[np.ndarray], indices: list[int], pad_id: int, bos_id: int, eos_id: int
) -> Batch:
    """Pad a batch: source = ids + eos; decoder input = bos + ids; decoder output = ids + eos."""
    B = len(indices)
    S = max(len(src[i]) for i in indices) + 1
    T = max(len(tgt[i]) for i in indices) + 1
    s = np.full((B, S), pad_id, dtype=np.int64)
    ti = np.full((B, T), pad_id, dtype=np.int64)
    to = np.full((B, T), pad_id, dtype=np.int64)
    for b, i in enumerate(indices):
        a, t = src[i], tgt[i]
        s[b, : len(a)] = a
        s[b, len(a)] = eos_id
        ti[b, 0] = bos_id
        ti[b, 1 : len(t) + 1] = t
        to[b, : len(t)] = t
        to[b, len(t)] = eos_id
    return Batch(torch.from_numpy(s), torch.from_numpy(ti), torch.from_numpy(to), list(indices), pad_id)


def lengths(seqs: list[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(s) + 1 for s in seqs), dtype=np.int64, count=len(seqs))
