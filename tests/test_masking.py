"""Media masking against a brute-force, token-by-token reference of the paper's rule."""

from __future__ import annotations

import torch

from infimm_hd.media_mask import cross_attention_mask, text_time

IMG = 9


def reference_allowed(ids: list[int], key_media: list[int], only_immediate: bool) -> list[list[bool]]:
    """For each token, which keys it may attend to: walk the text, counting <image> tokens seen so far."""
    out, seen = [], 0
    for tok in ids:
        seen += tok == IMG
        row = []
        for m in key_media:
            if m == 0 or seen == 0:
                row.append(False)
            else:
                row.append(m == seen if only_immediate else m <= seen)
        out.append(row)
    return out


def test_mask_matches_reference_on_random_batches():
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        B, T = 3, 12
        ids = torch.randint(0, 12, (B, T), generator=g)
        n_img = (ids == IMG).sum(-1)
        keys = []
        for b in range(B):
            per = torch.randint(1, 4, (int(n_img[b]),), generator=g).tolist()
            keys.append([m + 1 for m, n in enumerate(per) for _ in range(n)])
        S = max(1, max(len(k) for k in keys))
        kmi = torch.zeros(B, S, dtype=torch.long)
        for b, k in enumerate(keys):
            kmi[b, : len(k)] = torch.tensor(k, dtype=torch.long)
        for only_immediate in (True, False):
            mask, row = cross_attention_mask(text_time(ids, IMG), kmi, only_immediate)
            for b in range(B):
                ref = torch.tensor(reference_allowed(ids[b].tolist(), kmi[b].tolist(), only_immediate))
                has = ref.any(-1)
                assert torch.equal(row[b, :, 0], has), f"trial {trial} sample {b}: rows with media differ"
                # Rows with media: exactly the reference; rows without: all True (finite softmax, output dropped).
                assert torch.equal(mask[b, 0][has], ref[has]), f"trial {trial} sample {b}: mask differs"
                assert mask[b, 0][~has].all()


def test_media_seen_continues_counting_across_calls():
    ids = torch.tensor([[5, IMG, 6, IMG, 7]])
    full = text_time(ids, IMG)
    first = text_time(ids[:, :3], IMG)
    second = text_time(ids[:, 3:], IMG, media_seen=(ids[:, :3] == IMG).sum(-1))
    assert torch.equal(torch.cat([first, second], 1), full)
