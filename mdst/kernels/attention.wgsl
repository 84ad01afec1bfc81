// Causal attention with grouped-query heads over a layer's KV cache (read through kv/<format>.wgsl).
// Row r sits at position pos = pos0 + r and attends to positions [pos - window + 1, pos] (window 0:
// [0, pos]), read from slot position % ring. A workgroup computes GW query heads of one KV head, so a
// cached row is read once for all of them. Keys go a tile of T = WG / LPK at a time with an online
// softmax, so any context length runs in fixed memory:
//   1. scores: LPK lanes score each key of the tile for the GW heads (summed through workgroup memory);
//   2. weights: a thread per (head, key) finds the head's running max and the key's weight;
//   3. values: thread (key group, four dims) adds the weighted V rows of every KG-th key, for the GW heads.
// SPLIT = 0: workgroup (head group, row) writes the output. SPLIT > 0 (decode on a GPU, where a few heads
// would leave it idle): the keys up to the row's position are cut into ranges of at least SPLIT, one a
// workgroup z, which writes each head's partial (running max, sum, unnormalized output; head_dim + 2
// floats) for attention_merge. Row r reads and writes activation row row0 + r (STEP_ROW0); its partials
// are indexed by r. POOL (a batched step, a row per sequence): row r's position and pool slot come from the
// step's table (STEP_SEQS), and the cache bound is the whole pool, `stride` rows a slot.
// ROPE (decode: a row a sequence, a workgroup holding all the query heads of its KV head): q, kn and vn are the step's
// projections as they come from the matmuls, and the kernel does rope_store's work itself: each workgroup
// normalizes (q/k norms, where the model has them) and rotates its queries, and the workgroup whose keys end at
// the row's position stores the step's key and value in the cache first. One dispatch less a layer.
// Dispatch: (heads / GW, rows, 1), or (heads / GW, rows, splits) with SPLIT.

struct P {
    heads: u32,
    kv_heads: u32,
    ring: u32,
    window: u32,
    scale: f32,
    softcap: f32,    // 0: none; else scores become softcap * tanh(score / softcap)
    temp_scale: f32, // attention temperature (0: none): queries at position p are scaled by
    temp_floor: u32, //   1 + temp_scale * log(1 + floor(p / temp_floor))
    n_rot: u32,      // ROPE: dims rotated, as rope_store's
    neox: u32,
    mscale: f32,
    eps: f32,
    q_norm: u32,     // ROPE: 1 to normalize the queries with aux's q norm weight
    k_norm: u32,     //       and the key with its k norm weight
    stride: u32,     // POOL: rows from one slot of the pool to the next
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;       // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim] (or partials)
@group(0) @binding(5) var<storage, read> kn: array<f32>;      // ROPE: [rows, kv_heads * head_dim] the step's keys
@group(0) @binding(6) var<storage, read> vn: array<f32>;      // ROPE: and values
// ROPE: RoPE's frequencies [n_rot / 2], then the q norm's weight and the k norm's [head_dim each]
@group(0) @binding(7) var<storage, read> aux: array<f32>;
@group(0) @binding(8) var<uniform> p: P;

override WG: u32 = 128u;
override SPLIT: u32 = 0u;
override LPK: u32 = 4u;   // lanes per key: a power of two dividing WG
override GW: u32 = 1u;    // query heads a workgroup: divides heads / kv_heads, at most MAX_GW
override HD: u32;         // head_dim: a multiple of 4, at most 4 * WG; GW * HD <= QS
override ROPE: bool = false;
override POOL: bool = false;
override T: u32 = WG / LPK;
// HD is a specialization constant rather than a parameter so that every loop over a head or a tile has a
// fixed trip count, which the compiler can unroll to issue a tile's loads together.
override DV: u32 = HD / 4u;             // fours in a head
override KGN: u32 = WG / DV;            // key groups in step 3 (threads from KGN * DV on idle there)

// Limits of workgroup memory, read by the host (plan.attention_group): 16 KiB in all at WG = 128.
const MAX_GW: u32 = 8u;
const QS: u32 = 1024u;      // query values a workgroup holds: GW * head_dim
const SCORES: u32 = 512u;   // scores a tile holds: GW * T

var<workgroup> qs: array<vec4<f32>, QS / 4u>;   // [GW, head_dim / 4], scaled
var<workgroup> red: array<vec4<f32>, 2u * WG>;  // lane i's partial scores: heads 0-3 at i, 4-7 at WG + i
var<workgroup> sc: array<f32, SCORES>;          // [GW, T] the tile's scores
var<workgroup> pw: array<f32, SCORES>;          // [GW, T] their weights exp(score - running max)
var<workgroup> mh: array<f32, 2u * MAX_GW>;     // running max per head, two slots used in turn
var<workgroup> al: array<f32, MAX_GW>;          // per head: the factor old sums take at this tile
var<workgroup> nr: array<f32, MAX_GW + 1u>;     // ROPE: the heads' norm factors, the key's last

// Per-thread sums of the GW heads live in vectors (heads 0-3 and 4-7) read with constant indices: arrays
// indexed by head in loops may be kept in local memory (DESIGN.md). A head past GW stands for the group's
// last (`hc`), so every lane computes from valid data.
fn hc(g: u32) -> u32 {
    return min(g, GW - 1u);
}

// Head g's value of the (lo, hi) pair.
fn head_of(lo: vec4<f32>, hi: vec4<f32>, g: u32) -> f32 {
    return select(lo[g & 3u], hi[g & 3u], g >= 4u);
}

// Column g & 3 of m, by selects rather than an index.
fn col_of(m: mat4x4<f32>, g: u32) -> vec4<f32> {
    return select(select(m[0], m[1], (g & 1u) == 1u), select(m[2], m[3], (g & 1u) == 1u), (g & 2u) == 2u);
}

// The scores of key k's four dims i for heads h, h + 1, h + 2, h + 3.
fn dots4(h: u32, i: u32, k: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(qs[hc(h) * DV + i], k), dot(qs[hc(h + 1u) * DV + i], k), dot(qs[hc(h + 2u) * DV + i], k),
                     dot(qs[hc(h + 3u) * DV + i], k));
}

// A tile's weights for heads h .. h + 3 at key u (from pw), or their rescale factors (from al).
fn pw4(h: u32, u: u32) -> vec4<f32> {
    return vec4<f32>(pw[hc(h) * T + u], pw[hc(h + 1u) * T + u], pw[hc(h + 2u) * T + u], pw[hc(h + 3u) * T + u]);
}

fn al4(h: u32) -> vec4<f32> {
    return vec4<f32>(al[hc(h)], al[hc(h + 1u)], al[hc(h + 2u)], al[hc(h + 3u)]);
}

// v weighted by each of w's four heads: columns of a head's four dims.
fn outer(v: vec4<f32>, w: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(v * w.x, v * w.y, v * w.z, v * w.w);
}

// ROPE: four i of the workgroup's query head g (g = GW: the step's key, kept in red), and its writing.
fn rope_get(g: u32, i: u32) -> vec4<f32> {
    return select(qs[min(g, GW - 1u) * DV + i], red[i], g == GW);
}

fn rope_set(g: u32, i: u32, v: vec4<f32>) {
    if (g == GW) {
        red[i] = v;
    } else {
        qs[g * DV + i] = v;
    }
}

// ROPE: the workgroup's queries (loaded into qs unscaled) and the step's key of KV head kvh (into red[0 .. DV)) at
// row `row`, normalized where the model says, times the norm's weight (queries also times qscale) and rotated to
// position pos.
fn rope_inputs(lid: u32, row: u32, pos: u32, kvh: u32, qscale: f32) {
    for (var i = lid; i < DV; i += WG) {
        let b = (row * p.kv_heads + kvh) * HD + 4u * i;
        red[i] = vec4<f32>(kn[b], kn[b + 1u], kn[b + 2u], kn[b + 3u]);
    }
    workgroupBarrier();
    if (lid <= GW) {   // a thread a head's sum of squares
        var ss = 0.0;
        for (var i = 0u; i < DV; i++) {
            let v = rope_get(lid, i);
            ss += dot(v, v);
        }
        let norm = select(p.q_norm, p.k_norm, lid == GW) != 0u;
        nr[lid] = select(1.0, inverseSqrt(ss / f32(HD) + p.eps), norm);
    }
    workgroupBarrier();
    for (var e = lid; e < (GW + 1u) * DV; e += WG) {
        let g = e / DV;
        let is_k = g == GW;
        let wb = p.n_rot / 2u + select(0u, HD, is_k) + 4u * (e % DV);
        var f = vec4<f32>(nr[g] * select(qscale, 1.0, is_k));
        if (select(p.q_norm, p.k_norm, is_k) != 0u) {
            f *= vec4<f32>(aux[wb], aux[wb + 1u], aux[wb + 2u], aux[wb + 3u]);
        }
        rope_set(g, e % DV, rope_get(g, e % DV) * f);
    }
    workgroupBarrier();
    // a thread owns whole fours: four j's two pairs, or in NeoX order fours j and j + n_rot / 8 (four pairs)
    let items = select(p.n_rot / 4u, p.n_rot / 8u, p.neox != 0u);
    for (var e = lid; e < (GW + 1u) * items; e += WG) {
        let g = e / items;
        let j = e % items;
        var a = rope_get(g, j);
        if (p.neox != 0u) {
            var b = rope_get(g, j + items);
            for (var c = 0u; c < 4u; c++) {
                let o = rotate_pair(vec2<f32>(a[c], b[c]), pos, aux[4u * j + c], p.mscale);
                a[c] = o.x;
                b[c] = o.y;
            }
            rope_set(g, j + items, b);
        } else {
            a = vec4<f32>(rotate_pair(a.xy, pos, aux[2u * j], p.mscale),
                          rotate_pair(a.zw, pos, aux[2u * j + 1u], p.mscale));
        }
        rope_set(g, j, a);
    }
    workgroupBarrier();
}

// ROPE: the step's key (from red) and value of KV head kvh into the cache's slot for position pos (the
// sequence's slot starting at cache row `base`).
fn store_kv(lid: u32, row: u32, pos: u32, base: u32, kvh: u32) {
    let slot = base + pos % p.ring;
    let kv_dim = p.kv_heads * HD;
    for (var blk = lid; blk < HD / KVB; blk += WG) {
        var kx: array<f32, KVB>;
        var vx: array<f32, KVB>;
        for (var j = 0u; j < KVB; j++) {
            let d = blk * KVB + j;
            kx[j] = red[d / 4u][d % 4u];
            vx[j] = vn[(row * p.kv_heads + kvh) * HD + d];
        }
        k_put(slot, (kvh * HD) / KVB + blk, kv_dim, kx);
        v_put(slot, (kvh * HD) / KVB + blk, kv_dim, vx);
    }
}

fn put4(i: u32, v: vec4<f32>) {
    out[i] = v.x;
    out[i + 1u] = v.y;
    out[i + 2u] = v.z;
    out[i + 3u] = v.w;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.y;
    if (r >= step[STEP_ROWS]) {
        return;
    }
    var pos = step[STEP_POS0] + r;
    var base = 0u;   // the sequence's first cache row
    if (POOL) {
        pos = step[step[STEP_SEQS] + 2u * r];
        base = step[step[STEP_SEQS] + 2u * r + 1u] * p.stride;
    }
    var first = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        first = pos + 1u - p.window;
    }
    var last = pos;   // keys [first, last]
    if (SPLIT > 0u) {
        // the nwg.z splits share the filled keys, at least SPLIT each (reference.split_keys): a cache
        // allocated long but filled short still spreads its keys over many workgroups
        let len = max(SPLIT, (last + 1u - first + nwg.z - 1u) / nwg.z);
        first += wid.z * len;
        last = min(pos, first + len - 1u);
    }
    let h0 = wid.x * GW;
    let kb = (h0 / (p.heads / p.kv_heads)) * HD;   // the KV head's first value in a cached row
    let kv_dim = p.kv_heads * HD;
    let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));
    let row = step[STEP_ROW0] + r;   // the row's place in the activations
    for (var i = lid; i < GW * DV; i += WG) {
        let qb = (row * p.heads + h0) * HD + 4u * i;
        qs[i] = vec4<f32>(q[qb], q[qb + 1u], q[qb + 2u], q[qb + 3u]) * select(qscale, 1.0, ROPE);
    }
    if (ROPE) {
        let kvh = h0 / (p.heads / p.kv_heads);
        rope_inputs(lid, row, pos, kvh, qscale);
        if (first <= last && last == pos) {   // the split that holds the row's own key stores it
            store_kv(lid, row, pos, base, kvh);
        }
        storageBarrier();   // the stored row is read back below like any other
    }
    if (lid < 2u * MAX_GW) {
        mh[lid] = -3.0e38;
    }
    workgroupBarrier();

    let lane = lid % LPK;
    let kk = lid / LPK;        // the key this lane scores
    let kg = lid / DV;
    let c = lid % DV;          // the four dims this thread adds in step 3
    var acc_lo = mat4x4<f32>();   // the four dims' unnormalized outputs of heads 0-3 (columns)
    var acc_hi = mat4x4<f32>();   // heads 4-7
    var l_lo = vec4<f32>(0.0);    // their sums of weights
    var l_hi = vec4<f32>(0.0);
    var slot = 0u;             // mh slot holding the running max
    for (var t0 = first; t0 <= last; t0 += T) {
        let n = min(T, last + 1u - t0);   // keys in this tile
        // 1. scores
        var s_lo = vec4<f32>(0.0);
        var s_hi = vec4<f32>(0.0);
        // a key past the tile's n scores the tile's last key again (its weight is 0 in step 2), so every
        // lane loads unconditionally
        let row = base + (t0 + min(kk, n - 1u)) % p.ring;
        for (var j = 0u; j < (DV + LPK - 1u) / LPK; j++) {
            let i = lane + j * LPK;
            if (i < DV) {
                let k = k_get4(row, kb + 4u * i, kv_dim);
                s_lo += dots4(0u, i, k);
                if (GW > 4u) {
                    s_hi += dots4(4u, i, k);
                }
            }
        }
        if (LPK > 1u) {
            red[lid] = s_lo;
            if (GW > 4u) {
                red[WG + lid] = s_hi;
            }
            workgroupBarrier();
            for (var e = lid; e < GW * T; e += WG) {
                let g = e / T;
                let t = e % T;
                var s = 0.0;
                for (var j = 0u; j < LPK; j++) {
                    s += red[(g / 4u) * WG + t * LPK + j][g % 4u];
                }
                sc[e] = softcapped(s, p.softcap);
            }
        } else {
            for (var g = 0u; g < GW; g++) {
                sc[g * T + kk] = softcapped(head_of(s_lo, s_hi, g), p.softcap);
            }
        }
        workgroupBarrier();
        // 2. weights: past the tile's n keys a score repeats the last key's (so the max is the same) and its
        // weight is 0
        for (var e = lid; e < GW * T; e += WG) {
            let g = e / T;
            let t = e % T;
            let old = mh[slot * MAX_GW + g];
            var m = old;
            for (var u = 0u; u < T; u++) {
                m = max(m, sc[g * T + u]);
            }
            var w = 0.0;
            if (t < n) {
                w = exp(sc[e] - m);
            }
            pw[e] = w;
            if (t == 0u) {
                mh[(1u - slot) * MAX_GW + g] = m;
                al[g] = exp(old - m);
            }
        }
        workgroupBarrier();
        slot = 1u - slot;
        // 3. values (the next tile's writes to pw and al come after its first barrier); a key past n reads
        // the last key's row with weight 0
        if (kg < KGN) {
            let a_lo = al4(0u);
            acc_lo = mat4x4<f32>(acc_lo[0] * a_lo.x, acc_lo[1] * a_lo.y, acc_lo[2] * a_lo.z, acc_lo[3] * a_lo.w);
            l_lo *= a_lo;
            if (GW > 4u) {
                let a_hi = al4(4u);
                acc_hi = mat4x4<f32>(acc_hi[0] * a_hi.x, acc_hi[1] * a_hi.y, acc_hi[2] * a_hi.z, acc_hi[3] * a_hi.w);
                l_hi *= a_hi;
            }
            for (var j = 0u; j < (T + KGN - 1u) / KGN; j++) {
                let u = kg + j * KGN;
                if (u < T) {
                    let v = v_get4(base + (t0 + min(u, n - 1u)) % p.ring, kb + 4u * c, kv_dim);
                    let w_lo = pw4(0u, u);
                    acc_lo += outer(v, w_lo);
                    l_lo += w_lo;
                    if (GW > 4u) {
                        let w_hi = pw4(4u, u);
                        acc_hi += outer(v, w_hi);
                        l_hi += w_hi;
                    }
                }
            }
        }
    }
    // Sum the key groups' partial outputs, one head at a time, through red.
    for (var g = 0u; g < GW; g++) {
        if (kg < KGN) {
            red[lid] = select(col_of(acc_lo, g), col_of(acc_hi, g), g >= 4u);
            red[WG + lid] = vec4<f32>(head_of(l_lo, l_hi, g));
        }
        workgroupBarrier();
        if (lid < DV) {
            var o = red[lid];
            var s = red[WG + lid].x;
            for (var j = 1u; j < KGN; j++) {
                o += red[j * DV + lid];
                s += red[WG + j * DV + lid].x;
            }
            let h = h0 + g;
            if (SPLIT > 0u) {
                // an empty split (past pos) has sum 0
                let pb = ((r * p.heads + h) * nwg.z + wid.z) * (HD + 2u);
                if (lid == 0u) {
                    out[pb] = mh[slot * MAX_GW + g];
                    out[pb + 1u] = s;
                }
                put4(pb + 2u + 4u * lid, o);
            } else {
                put4((row * p.heads + h) * HD + 4u * lid, o / s);
            }
        }
        workgroupBarrier();
    }
}
