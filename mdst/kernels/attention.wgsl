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
// are indexed by r.
// Dispatch: (heads / GW, rows, 1), or (heads / GW, rows, splits) with SPLIT.

struct P {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // a multiple of 4, at most 4 * WG; GW * head_dim <= QS
    ring: u32,
    window: u32,
    scale: f32,
    softcap: f32,    // 0: none; else scores become softcap * tanh(score / softcap)
    temp_scale: f32, // attention temperature (0: none): queries at position p are scaled by
    temp_floor: u32, //   1 + temp_scale * log(1 + floor(p / temp_floor))
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;       // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim] (or partials)
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 128u;
override SPLIT: u32 = 0u;
override LPK: u32 = 4u;   // lanes per key: a power of two dividing WG
override GW: u32 = 1u;    // query heads a workgroup: divides heads / kv_heads, at most MAX_GW
override T: u32 = WG / LPK;

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
    let pos = step[STEP_POS0] + r;
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
    let kb = (h0 / (p.heads / p.kv_heads)) * p.head_dim;   // the KV head's first value in a cached row
    let kv_dim = p.kv_heads * p.head_dim;
    let dv = p.head_dim / 4u;   // fours in a head
    let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));
    for (var i = lid; i < GW * dv; i += WG) {
        let qb = ((step[STEP_ROW0] + r) * p.heads + h0) * p.head_dim + 4u * i;
        qs[i] = vec4<f32>(q[qb], q[qb + 1u], q[qb + 2u], q[qb + 3u]) * qscale;
    }
    if (lid < 2u * MAX_GW) {
        mh[lid] = -3.0e38;
    }
    workgroupBarrier();

    let lane = lid % LPK;
    let kk = lid / LPK;        // the key this lane scores
    let kg_n = WG / dv;        // key groups in step 3 (threads from kg_n * dv on idle there)
    let kg = lid / dv;
    let c = lid % dv;          // the four dims this thread adds in step 3
    var acc: array<vec4<f32>, MAX_GW>;
    var l: array<f32, MAX_GW>;
    var slot = 0u;             // mh slot holding the running max
    var part: array<f32, MAX_GW>;
    for (var t0 = first; t0 <= last; t0 += T) {
        let n = min(T, last + 1u - t0);   // keys in this tile
        // 1. scores
        for (var g = 0u; g < GW; g++) {
            part[g] = 0.0;   // assigned, not declared here: a declaration in a loop may be zeroed once only
        }
        if (kk < n) {
            let row = (t0 + kk) % p.ring;
            for (var i = lane; i < dv; i += LPK) {
                let k = k_get4(row, kb + 4u * i, kv_dim);
                for (var g = 0u; g < GW; g++) {
                    part[g] += dot(qs[g * dv + i], k);
                }
            }
        }
        if (LPK > 1u) {
            red[lid] = vec4<f32>(part[0], part[1], part[2], part[3]);
            if (GW > 4u) {
                red[WG + lid] = vec4<f32>(part[4], part[5], part[6], part[7]);
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
                sc[g * T + kk] = softcapped(part[g], p.softcap);
            }
        }
        workgroupBarrier();
        // 2. weights: past the tile's n keys a score is ignored, its weight 0
        for (var e = lid; e < GW * T; e += WG) {
            let g = e / T;
            let t = e % T;
            let old = mh[slot * MAX_GW + g];
            var m = old;
            for (var u = 0u; u < n; u++) {
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
        // 3. values (the next tile's writes to pw and al come after its first barrier)
        if (kg < kg_n) {
            for (var g = 0u; g < GW; g++) {
                acc[g] *= al[g];
                l[g] *= al[g];
            }
            for (var u = kg; u < n; u += kg_n) {
                let v = v_get4((t0 + u) % p.ring, kb + 4u * c, kv_dim);
                for (var g = 0u; g < GW; g++) {
                    let w = pw[g * T + u];
                    acc[g] += w * v;
                    l[g] += w;
                }
            }
        }
    }
    // Sum the key groups' partial outputs, one head at a time, through red.
    for (var g = 0u; g < GW; g++) {
        if (kg < kg_n) {
            red[lid] = acc[g];
            red[WG + lid] = vec4<f32>(l[g]);
        }
        workgroupBarrier();
        if (lid < dv) {
            var o = red[lid];
            var s = red[WG + lid].x;
            for (var j = 1u; j < kg_n; j++) {
                o += red[j * dv + lid];
                s += red[WG + j * dv + lid].x;
            }
            let h = h0 + g;
            if (SPLIT > 0u) {
                // an empty split (past pos) has sum 0
                let pb = ((r * p.heads + h) * nwg.z + wid.z) * (p.head_dim + 2u);
                if (lid == 0u) {
                    out[pb] = mh[slot * MAX_GW + g];
                    out[pb + 1u] = s;
                }
                put4(pb + 2u + 4u * lid, o);
            } else {
                put4(((step[STEP_ROW0] + r) * p.heads + h) * p.head_dim + 4u * lid, o / s);
            }
        }
        workgroupBarrier();
    }
}
