// Causal attention with grouped-query heads over a layer's KV cache (read through
// kv/<type>.wgsl). Row r sits at position pos = pos0 + r and attends to positions
// [pos - window + 1, pos] (window 0: [0, pos]), read from slot position % ring. Keys are
// taken WG at a time with an online softmax, so any context length runs in fixed memory.
// SPLIT = 0: one workgroup per (query head, row) writes the output. SPLIT > 0 (decode on a GPU,
// where a few heads would leave it idle): workgroup z takes the SPLIT keys from the z-th onwards
// and writes its partial (running max, sum, unnormalized output; head_dim + 2 floats) for
// attention_merge to combine.
// LPK lanes score each key together, reading its row in contiguous pieces (coalesced on GPUs)
// and summing through workgroup memory; LPK = 1 (a lane per key, no extra barriers) suits CPUs.
// Dispatch: (heads, rows, 1), or (heads, rows, splits) with SPLIT.

struct P {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // a multiple of 4, at most 8 * WG
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

override WG: u32 = 64u;
override SPLIT: u32 = 0u;
override LPK: u32 = 1u;   // lanes per key: a power of two dividing WG

var<workgroup> qs: array<f32, 512>;
var<workgroup> sc: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

fn q4(d: u32) -> vec4<f32> {
    return vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]);
}

fn k4(row: u32, i: u32, kv_dim: u32) -> vec4<f32> {
    return vec4<f32>(k_get(row, i, kv_dim), k_get(row, i + 1u, kv_dim), k_get(row, i + 2u, kv_dim),
                     k_get(row, i + 3u, kv_dim));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
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
        first += wid.z * SPLIT;
        last = min(pos, first + SPLIT - 1u);
    }
    let kvh = h / (p.heads / p.kv_heads);
    let kv_dim = p.kv_heads * p.head_dim;
    let qbase = (r * p.heads + h) * p.head_dim;
    let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));
    for (var d = lid; d < p.head_dim; d += WG) {
        qs[d] = q[qbase + d] * qscale;
    }
    workgroupBarrier();

    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, 8>;
    let kpc = WG / LPK;   // keys scored per chunk
    let lane = lid % LPK;
    let kk = lid / LPK;
    for (var t0 = first; t0 <= last; t0 += kpc) {
        let j = t0 + kk;
        var dot_ = 0.0;
        if (j <= last) {
            let row = j % p.ring;
            let kb = kvh * p.head_dim;
            // four neighbouring values a lane, two fours an iteration: eight loads in flight
            for (var d = 4u * lane; d < p.head_dim; d += 8u * LPK) {
                dot_ += dot(q4(d), k4(row, kb + d, kv_dim));
                let d2 = d + 4u * LPK;
                if (d2 < p.head_dim) {
                    dot_ += dot(q4(d2), k4(row, kb + d2, kv_dim));
                }
            }
        }
        if (LPK > 1u) {
            red[lid] = dot_;
            workgroupBarrier();
            for (var w = LPK / 2u; w > 0u; w /= 2u) {
                if (lane < w) {
                    red[lid] += red[lid + w];
                }
                workgroupBarrier();
            }
            dot_ = red[lid - lane];
        }
        if (lane == 0u) {
            var s = -3.0e38;
            if (j <= last) {
                s = dot_;
                if (p.softcap > 0.0) {
                    s = p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0));
                }
            }
            sc[kk] = s;
        }
        workgroupBarrier();
        let n = min(kpc, last + 1u - t0);
        var tm = m;
        for (var u = 0u; u < n; u++) {
            tm = max(tm, sc[u]);
        }
        let alpha = exp(m - tm);
        l *= alpha;
        for (var c = 0u; c < 8u; c++) {
            acc[c] *= alpha;
        }
        // four keys an iteration (loads in flight together); past n a key weighs 0 and rereads key u
        let vb = kvh * p.head_dim;
        for (var u = 0u; u < n; u += 4u) {
            var pw: vec4<f32>;
            var rows: vec4<u32>;
            for (var e = 0u; e < 4u; e++) {
                let ue = select(u, u + e, u + e < n);
                pw[e] = select(0.0, exp(sc[ue] - tm), u + e < n);
                rows[e] = (t0 + ue) % p.ring;
            }
            l += pw.x + pw.y + pw.z + pw.w;
            for (var c = 0u; c < 8u; c++) {
                let d = lid + c * WG;
                if (d < p.head_dim) {
                    acc[c] += dot(pw, vec4<f32>(v_get(rows.x, vb + d, kv_dim), v_get(rows.y, vb + d, kv_dim),
                                                v_get(rows.z, vb + d, kv_dim), v_get(rows.w, vb + d, kv_dim)));
                }
            }
        }
        m = tm;
        workgroupBarrier();
    }
    if (SPLIT > 0u) {
        // partial (m, l, acc) of split z; an empty split (past pos) has l = 0
        let pb = ((r * p.heads + h) * nwg.z + wid.z) * (p.head_dim + 2u);
        if (lid == 0u) {
            out[pb] = m;
            out[pb + 1u] = l;
        }
        for (var c = 0u; c < 8u; c++) {
            let d = lid + c * WG;
            if (d < p.head_dim) {
                out[pb + 2u + d] = acc[c];
            }
        }
        return;
    }
    for (var c = 0u; c < 8u; c++) {
        let d = lid + c * WG;
        if (d < p.head_dim) {
            out[qbase + d] = acc[c] / l;
        }
    }
}
