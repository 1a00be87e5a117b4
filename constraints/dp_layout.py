"""DPTables: a TokenDFA's state pairs laid out in blocks for the Viterbi sweep (dp.py runs the sweep).

Legend: S DFA states (+1: DONE = S), K token classes (+2 pseudo classes: EOS = K, ANY = K+1), P state pairs
(q, q') joined by at least one class, D distinct class sets of pairs, W slots (in-pairs) per state of a
block, T templates of a block, n states per template, P' padded pairs.

One sweep position is: gather the previous scores at every padded pair's source, add the best logit of the
pair's class set, and take a max over each state's W slots. Measured on one core, numpy gathers cost
~1.3 ns an element, a dense add or max ~0.25 ns, and each numpy call ~2.5 us. So the layout aims for few
calls and as few gathered elements as possible:

- Templates: in the large schemas ~75% of the pairs belong to string-body states that share one
  *signature* (the sorted class sets of their in-pairs; one per phase of a character position, nine in
  all). A template's W x n pairs then need only W gathered set scores, added by broadcasting, instead of
  one per pair. Templates of a similar width share a block [W, T, n] (padded with -inf slots and, past a
  template's own n states, dummy states that stay -inf).
- The remaining states sit in generic blocks [W, T = count, n = 1] grouped by in-degree rounded up to a
  bucket width, each state's in-pairs padded to W, as before; there the set score is gathered per pair.

Blocks are stored slot-major ([W, T * n]: slot k of every state, then slot k + 1), so the max over slots is
an elementwise max of W contiguous rows, which vectorises (a max along short rows does not); a generic
block of a few states with many slots each (in-degree 256-2048) is stored state-major instead, since there
the states' slot lists are the long axis. Class sets are numbered by size group, so set_max (dp.py)
reduces each group into adjacent columns with one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from constraints.dfa import TokenDFA

# One generic bucket costs a numpy call per position (~2.5 us; a padded pair ~3 ns): a small bucket is
# merged into the next wider one when its extra padding is below this many pairs.
_BUCKET_OVERHEAD_PAIRS = 768
# A signature becomes a template when it has at least this many states and pairs (below that, the saved
# set gathers do not pay for the extra add call).
_TEMPLATE_MIN_STATES = 16
_TEMPLATE_MIN_PAIRS = 2048
# Templates of one rounded width share a block while they have at least this fraction of the states of the
# block's largest one (the rest of each column is dummy states, gathered and maxed for nothing).
_TEMPLATE_JOIN_RATIO = 0.75


def _starts(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct keys, start offsets) of a sorted key array, for np.*.reduceat."""
    if sorted_keys.size == 0:
        return sorted_keys, sorted_keys
    head = np.ones(sorted_keys.size, dtype=bool)
    head[1:] = sorted_keys[1:] != sorted_keys[:-1]
    idx = np.nonzero(head)[0]
    return sorted_keys[idx], idx


@dataclass(frozen=True)
class Block:
    """States [first, first + T * n) (internal ids, template-major) with W padded in-pair slots each.

    Pairs sit at pad_*[off : off + W * T * n] as [W, T, n]; set ids at row_set[row_off : + W * T] as
    [W, T]: one per slot and template (for a generic block, n = 1, that is one per pair).
    """

    first: int
    width: int  # W
    templates: int  # T
    cols: int  # n
    off: int
    row_off: int
    state_major: bool = False  # generic blocks only: stored [T, W] (each state's slots contiguous)

    @property
    def n_states(self) -> int:
        return self.templates * self.cols

    def pairs_of(self, q: int) -> slice:
        """Where internal state q's padded in-pairs sit in pad_* (strided if the layout is slot-major)."""
        if self.state_major:
            return slice(
                self.off + (q - self.first) * self.width, self.off + (q - self.first + 1) * self.width
            )
        t, c = divmod(q - self.first, self.cols)
        return slice(self.off + t * self.cols + c, self.off + self.width * self.n_states, self.n_states)


@dataclass
class DPTables:
    """A TokenDFA laid out for the sweep; built once per compiled constraint, shared by rows.

    External state ids are the DFA's (DONE = S); internal ids order states by block, then dummies' and
    in-degree-0 states, with `sentinel` (= n_internal) always -inf. `dist` is by external id (the hook reads
    it); `end_dist` by internal id (dummies: never an allowed end).
    """

    n_states: int  # S (DONE is external index S)
    n_classes: int  # K
    live_tokens: np.ndarray  # [V'] token ids of real classes, sorted by class
    class_starts: np.ndarray  # [K] offsets into live_tokens
    eos_ids: np.ndarray  # [E_ids]
    set_members: np.ndarray  # flattened class ids of each distinct set (may include K, K+1)
    set_starts: np.ndarray  # [D] offsets into set_members
    set_cols: np.ndarray  # int64: per size group, [w, count] slot-major class columns (K + 2 = padding)
    set_groups: list[tuple[int, int, int, int]]  # (first set id, count, width w, offset into set_cols)
    dist: np.ndarray  # [S + 1] by external id
    token_bucket: np.ndarray  # int64 [V]: class per token, K + 2 (discarded) for never-allowed ones
    n_internal: int  # internal states, dummies included; the sentinel is this index
    to_internal: np.ndarray  # [S + 1] external -> internal
    to_external: np.ndarray  # [n_internal + 1] internal -> external (-1 for dummies and the sentinel)
    end_dist: np.ndarray  # [n_internal] dist by internal id (dummies: a huge value)
    pad_src: np.ndarray  # int64 [P']: internal source of each padded pair (sentinel for padding)
    pad_set: np.ndarray  # int64 [P']: set id of each padded pair (D = the -inf column), for backtracking
    row_set: np.ndarray  # int64 [R]: set id per block row (slot x template), generic blocks' rows last
    blocks: list[Block]  # template blocks first, then generic ones
    n_template_blocks: int
    state_pairs: list[slice]  # [n_internal] Block.pairs_of per internal state (a no-pair slice if none)

    @classmethod
    def from_dfa(cls, dfa: TokenDFA) -> DPTables:
        S, K = dfa.n_states, dfa.n_classes
        tc = dfa.token_class.astype(np.int64)
        live = np.nonzero(tc >= 0)[0]
        live = live[np.argsort(tc[live], kind="stable")]
        _, class_starts = _starts(tc[live])
        finals = np.nonzero(dfa.final)[0]
        src, dst, ecls = [dfa.edge_src.astype(np.int64)], [dfa.edge_dst.astype(np.int64)], [dfa.edge_cls]
        if dfa.eos_ids.size:  # final -(EOS)-> DONE -(ANY)-> DONE
            src += [finals, [S]]
            dst += [np.full(finals.size, S), [S]]
            ecls += [np.full(finals.size, K), [K + 1]]
        src, dst, ecls = (np.concatenate(x).astype(np.int64) for x in (src, dst, ecls))
        pair_key, edge_pair = np.unique(dst * (S + 1) + src, return_inverse=True)  # sorted by dst, then src
        edge_pair = edge_pair.reshape(-1)
        # the class set of each pair, deduplicated across pairs
        order = np.lexsort((ecls, edge_pair))
        sets: dict[tuple, int] = {}
        pair_set = np.empty(pair_key.size, dtype=np.int64)
        bounds = np.searchsorted(edge_pair[order], np.arange(pair_key.size + 1))
        for p in range(pair_key.size):
            members = tuple(ecls[order[bounds[p] : bounds[p + 1]]].tolist())
            pair_set[p] = sets.setdefault(members, len(sets))
        # sets renumbered by rounded-up size, so set_max reduces each size group into adjacent columns
        set_list = list(sets)
        size_w = _round_width(np.asarray([len(m) for m in set_list], dtype=np.int64))
        by_size = np.argsort(size_w, kind="stable")
        renum = np.empty(len(set_list), dtype=np.int64)
        renum[by_size] = np.arange(len(set_list))
        pair_set = renum[pair_set]
        set_list = [set_list[d] for d in by_size.tolist()]
        set_members = np.asarray([c for m in set_list for c in m], dtype=np.int64)
        set_starts = np.cumsum([0] + [len(m) for m in set_list][:-1]).astype(np.int64)
        set_cols, set_groups = _set_groups(set_list, size_w[by_size], K + 2)
        dist = np.append(dfa.dist, 0).astype(np.int64)
        lay = _layout(S + 1, pair_key // (S + 1), pair_key % (S + 1), pair_set, len(sets))
        end_dist = np.full(lay["n_internal"], np.iinfo(np.int64).max, dtype=np.int64)
        real = lay["to_external"][:-1] >= 0
        end_dist[real] = dist[lay["to_external"][:-1][real]]
        return cls(
            n_states=S,
            n_classes=K,
            live_tokens=live,
            class_starts=class_starts,
            eos_ids=dfa.eos_ids.astype(np.int64),
            set_members=set_members,
            set_starts=set_starts,
            set_cols=set_cols,
            set_groups=set_groups,
            dist=dist,
            token_bucket=np.where(tc >= 0, tc, K + 2),
            end_dist=end_dist,
            **lay,
        )

    @property
    def done(self) -> int:
        return self.n_states

    @property
    def n_sets(self) -> int:
        return int(self.set_starts.size)

    def set_classes(self, d: int) -> np.ndarray:
        hi = self.set_starts[d + 1] if d + 1 < self.set_starts.size else self.set_members.size
        return self.set_members[self.set_starts[d] : hi]


def _round_width(deg: np.ndarray) -> np.ndarray:
    """In-degree rounded up to 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (at most 1/3 padding, two an octave)."""
    d = np.maximum(deg, 1)
    p = 1 << np.floor(np.log2(d)).astype(np.int64)
    return np.where(d <= p, p, np.where(d <= p + p // 2, p + p // 2, 2 * p))


def _bucket_width(deg: np.ndarray) -> np.ndarray:
    """Per state, its padded width: _round_width, then small buckets merged upward while that is cheaper
    than a bucket's per-position call (see _BUCKET_OVERHEAD_PAIRS)."""
    width = _round_width(deg)
    ws, counts = np.unique(width, return_counts=True)
    target = {}
    carried = 0
    for j, w in enumerate(ws.tolist()):
        carried += int(counts[j])
        if j + 1 < ws.size and (int(ws[j + 1]) - w) * carried < _BUCKET_OVERHEAD_PAIRS:
            target[w] = int(ws[j + 1])  # merged into the next bucket, with whatever was merged into it
        else:
            target[w], carried = w, 0
    for w in reversed(ws.tolist()):  # resolve chains of merges to their final width
        target[w] = target[target[w]]
    return np.vectorize(target.__getitem__, otypes=[np.int64])(width)


def _set_groups(set_list: list[tuple], widths: np.ndarray, pad_col: int):
    """Class columns of the sets (already ordered by rounded size), padded to their group's width."""
    cols, groups, off, first = [], [], 0, 0
    for w in np.unique(widths).tolist() if widths.size else []:
        count = int((widths == w).sum())
        block = np.full((w, count), pad_col, dtype=np.int64)
        for r, members in enumerate(set_list[first : first + count]):
            block[: len(members), r] = members
        cols.append(block.reshape(-1))
        groups.append((first, count, int(w), off))
        off += w * count
        first += count
    return (np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)), groups


def _layout(n: int, pair_dst: np.ndarray, pair_src: np.ndarray, pair_set: np.ndarray, n_sets: int) -> dict:
    """Internal numbering and padded pair arrays for n states (external ids) and their pairs.

    Pairs arrive sorted by destination. Returns the DPTables fields n_internal, to_internal, to_external,
    pad_src, pad_set, row_set, blocks, n_template_blocks and state_pairs.
    """
    deg = np.bincount(pair_dst, minlength=n)
    first_pair = np.concatenate([[0], np.cumsum(deg)])
    # each state's in-pairs ordered by set id, so states of one signature agree slot by slot
    in_pairs = []
    for q in range(n):
        lo, hi = int(first_pair[q]), int(first_pair[q + 1])
        o = lo + np.argsort(pair_set[lo:hi], kind="stable")
        in_pairs.append((pair_src[o], pair_set[o]))
    sigs: dict[tuple, list[int]] = {}
    for q in range(n):
        if deg[q]:
            sigs.setdefault(tuple(in_pairs[q][1].tolist()), []).append(q)
    plan = []  # (kind, W, state lists per template) per block
    templated = np.zeros(n, dtype=bool)
    for group in _template_groups(sigs):
        W = max(len(sig) for sig, _ in group)
        plan.append(("tmpl", W, [qs for _, qs in group]))
        for _, qs in group:
            templated[qs] = True
    rest = np.nonzero((deg > 0) & ~templated)[0]
    if rest.size:
        widths = _bucket_width(deg[rest])
        for w in np.unique(widths).tolist():
            qs = rest[widths == w]
            plan.append(("gen", int(w), [[int(q)] for q in qs.tolist()]))
    # internal ids: block states (with dummies), then states without in-pairs; sentinel last
    to_internal = np.full(n, -1, dtype=np.int64)
    ext_of: list[int] = []
    for _, _, groups in plan:
        cols = max(len(g) for g in groups)
        for g in groups:
            ext_of += list(g) + [-1] * (cols - len(g))
    ext_of += np.nonzero(deg == 0)[0].tolist()
    ext_arr = np.asarray(ext_of, dtype=np.int64)
    real = ext_arr >= 0
    to_internal[ext_arr[real]] = np.nonzero(real)[0]
    n_internal = len(ext_of)
    sentinel = n_internal
    pad_src, pad_set, tmpl_rows, gen_rows, blocks, off, first = [], [], [], [], [], 0, 0
    for kind, W, groups in plan:
        T, cols = len(groups), max(len(g) for g in groups)
        bsrc = np.full((W, T, cols), sentinel, dtype=np.int64)
        bset = np.full((W, T, cols), n_sets, dtype=np.int64)
        for t, g in enumerate(groups):
            for c, q in enumerate(g):
                s, d = in_pairs[q]
                bsrc[: s.size, t, c] = to_internal[s]
                bset[: d.size, t, c] = d
        # a generic block of few wide states is stored state by state: numpy's max over axis 0 is slow when
        # the rows are short (measured: [768, 2] 26 us slot-major vs 2 us state-major; [96, 69] 9 vs 10 us)
        state_major = kind == "gen" and 4 * T <= W
        if state_major:
            bsrc, bset = bsrc.transpose(1, 0, 2), bset.transpose(1, 0, 2)
        rows = bset[..., 0].reshape(-1)  # a template's states share their sets (n = 1 for generic blocks)
        (tmpl_rows if kind == "tmpl" else gen_rows).append(rows)
        blocks.append(Block(first, W, T, cols, off, -1, state_major))
        pad_src.append(bsrc.reshape(-1))
        pad_set.append(bset.reshape(-1))
        off += W * T * cols
        first += T * cols
    # row offsets: template rows first, then generic rows in block order, so one flat add covers all
    # generic blocks (a row is a pair there, in the same order as pad_*)
    row_off = 0
    for i, rows in enumerate(tmpl_rows + gen_rows):
        b = blocks[i]
        blocks[i] = Block(b.first, b.width, b.templates, b.cols, b.off, row_off, b.state_major)
        row_off += rows.size
    row_set = tmpl_rows + gen_rows
    n_tmpl = len(tmpl_rows)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
    state_pairs = [slice(0, 0)] * n_internal
    for b in blocks:
        for q in range(b.first, b.first + b.n_states):
            state_pairs[q] = b.pairs_of(q)
    return dict(
        n_internal=n_internal,
        to_internal=to_internal,
        to_external=np.append(ext_arr, -1),
        pad_src=cat(pad_src),
        pad_set=cat(pad_set),
        row_set=cat(row_set),
        blocks=blocks,
        n_template_blocks=n_tmpl,
        state_pairs=state_pairs,
    )


def _template_groups(sigs: dict[tuple, list[int]]) -> list[list[tuple[tuple, list[int]]]]:
    """Signatures worth a template, grouped into blocks: same rounded-up width, and a template joins the
    current block only if it has _TEMPLATE_JOIN_RATIO of the states of the block's largest template."""
    chosen = [
        (sig, qs)
        for sig, qs in sigs.items()
        if len(qs) >= _TEMPLATE_MIN_STATES and len(qs) * len(sig) >= _TEMPLATE_MIN_PAIRS
    ]
    if not chosen:
        return []
    widths = _round_width(np.asarray([len(sig) for sig, _ in chosen])).tolist()
    out: list[list[tuple[tuple, list[int]]]] = []
    for w in sorted(set(widths)):
        group = sorted((c for c, cw in zip(chosen, widths) if cw == w), key=lambda c: -len(c[1]))
        cur: list[tuple[tuple, list[int]]] = []
        for sig, qs in group:
            if cur and len(qs) < _TEMPLATE_JOIN_RATIO * len(cur[0][1]):
                out.append(cur)
                cur = []
            cur.append((sig, qs))
        out.append(cur)
    return out
