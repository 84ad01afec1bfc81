// Many-row attention (prefill) on GPUs as one flash-attention pass: causal GQA over a layer's KV cache
// (read through kv/<format>.wgsl), optional window, softcap and temperature, as attention.wgsl computes
// it, with no scores kept beyond one tile. A workgroup takes a block of QB = BR * GW query vectors: BR
// rows of GW query heads that share one KV head. A query vector has TPQ = ceil(head_dim / (4 NV)) threads,
// each holding NV fours of its dims (fours c = tq + TPQ j) in registers: the scaled query and the running
// output. Keys go BC at a time through workgroup memory, so a cached row is read once for all QB vectors:
//   1. the tile's K rows into workgroup memory;
//   2. each thread's partial dot (its dims) with every key of the tile into `red`;
//   3. the tile's V rows into the same memory, while each thread sums its vector's TPQ partials per key
//      (all of them get the same scores), masks them and moves its running max, rescaling its output;
//   4. each thread adds the tile's weighted V dims it owns, and its vector's running sum.
// Row r sits at position pos0 + r and attends to [pos - window + 1, pos] (window 0: [0, pos]), slot
// position % ring. Dispatch: (heads / GW, ceil(rows / BR), 1).

struct P {
    heads: u32,
    kv_heads: u32,
    ring: u32,
    window: u32,
    scale: f32,
    softcap: f32,    // 0: none; else scores become softcap * tanh(score / softcap)
    temp_scale: f32, // attention temperature (0: none): queries at position p are scaled by
    temp_floor: u32, //   1 + temp_scale * log(1 + floor(p / temp_floor))
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;          // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim]
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 128u;
override GW: u32 = 1u;    // query heads of one KV head a workgroup: divides heads / kv_heads
override BR: u32 = 8u;    // rows a workgroup
override BC: u32 = 16u;   // keys a tile: BC * head_dim <= KVMAX, BC * WG <= RED
override QB: u32 = BR * GW;   // query vectors a workgroup
override HD: u32;             // head_dim: a multiple of 4, at most 4 * NV * WG; BC * HD <= KVMAX; QB * TPQ <= WG
override DV: u32 = HD / 4u;   // fours in a head
override TPQ: u32 = (DV + NV - 1u) / NV;   // threads a query vector

// Limits of workgroup memory, read by the host (plan.flash_tiles): 16 KiB in all at WG = 128.
const KVMAX: u32 = 2048u;   // cached values a tile holds: BC * head_dim
const RED: u32 = 2048u;     // partial dots a tile holds: BC * WG
const NV: u32 = 8u;         // fours of dims a thread holds

var<workgroup> kv: array<vec4<f32>, KVMAX / 4u>;  // [BC, head_dim / 4]: the tile's K, then its V
var<workgroup> red: array<f32, RED>;              // [BC, WG]: thread i's partial dot with key t at t WG + i

// The first key row `pos` attends to.
fn first_key(pos: u32) -> u32 {
    if (p.window > 0u && pos + 1u > p.window) {
        return pos + 1u - p.window;
    }
    return 0u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_rows = step[STEP_ROWS];
    let r0 = wid.y * BR;
    if (r0 >= n_rows) {
        return;
    }
    let r_end = min(r0 + BR, n_rows);   // rows [r0, r_end) are real
    let first = first_key(step[STEP_POS0] + r0);
    let last = step[STEP_POS0] + r_end - 1u;   // keys [first, last] cover every row of the block
    let h0 = wid.x * GW;
    let kb = (h0 / (p.heads / p.kv_heads)) * HD;   // the KV head's first value in a cached row
    let kv_dim = p.kv_heads * HD;
    // this thread: query vector qi (row r0 + qi / GW, head h0 + qi % GW), fours c<j> = tq + TPQ j; fours past
    // the head's are clamped to its last and their query values are zero, so they add nothing
    let qi = lid / TPQ;
    let tq = lid % TPQ;
    let r = min(r0 + qi / GW, r_end - 1u);
    let live = qi < QB && r0 + qi / GW < r_end;
    let pos = step[STEP_POS0] + r;
    let lo = first_key(pos);
    let c0 = min(tq, DV - 1u);
    let c1 = min(tq + TPQ, DV - 1u);
    let c2 = min(tq + 2u * TPQ, DV - 1u);
    let c3 = min(tq + 3u * TPQ, DV - 1u);
    let c4 = min(tq + 4u * TPQ, DV - 1u);
    let c5 = min(tq + 5u * TPQ, DV - 1u);
    let c6 = min(tq + 6u * TPQ, DV - 1u);
    let c7 = min(tq + 7u * TPQ, DV - 1u);
    let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));
    let qb = (r * p.heads + h0 + min(qi, QB - 1u) % GW) * HD;
    // separate variables, not arrays: a loop-indexed array may live in slow memory
    let q0 = query4(qb, tq, live, qscale);
    let q1 = query4(qb, tq + TPQ, live, qscale);
    let q2 = query4(qb, tq + 2u * TPQ, live, qscale);
    let q3 = query4(qb, tq + 3u * TPQ, live, qscale);
    let q4 = query4(qb, tq + 4u * TPQ, live, qscale);
    let q5 = query4(qb, tq + 5u * TPQ, live, qscale);
    let q6 = query4(qb, tq + 6u * TPQ, live, qscale);
    let q7 = query4(qb, tq + 7u * TPQ, live, qscale);
    var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0); var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0); var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);
    var m = -3.0e38;   // the query vector's running max and sum (the same in each of its threads)
    var l = 0.0;
    let pv = qi * TPQ;   // the vector's first thread: its partials are red[t WG + pv + u], u < TPQ
    for (var t0 = first; t0 <= last; t0 += BC) {
        let n = min(BC, last + 1u - t0);   // keys in this tile
        // 1. K rows
        workgroupBarrier();   // the previous tile's step 4 is done with kv and red
        stage_tile(lid, t0, n, kb, kv_dim, false);
        workgroupBarrier();
        // 2. partial dots
        for (var t = 0u; t < BC; t++) {
            let b = t * DV;
            red[t * WG + lid] = dot(q0, kv[b + c0]) + dot(q1, kv[b + c1]) + dot(q2, kv[b + c2]) + dot(q3, kv[b + c3])
                              + dot(q4, kv[b + c4]) + dot(q5, kv[b + c5]) + dot(q6, kv[b + c6]) + dot(q7, kv[b + c7]);
        }
        workgroupBarrier();
        // 3. V rows; the tile's max
        stage_tile(lid, t0, n, kb, kv_dim, true);
        var mt = m;
        for (var t = 0u; t < n; t++) {
            mt = max(mt, score(t, t0 + t, pv, lo, pos));
        }
        let alpha = exp(m - mt);
        m = mt;
        l *= alpha;
        acc0 *= alpha; acc1 *= alpha; acc2 *= alpha; acc3 *= alpha;
        acc4 *= alpha; acc5 *= alpha; acc6 *= alpha; acc7 *= alpha;
        workgroupBarrier();
        // 4. values
        for (var t = 0u; t < n; t++) {
            let st = score(t, t0 + t, pv, lo, pos);
            var w = 0.0;
            if (st > -1.0e38) {
                w = exp(st - m);
            }
            l += w;
            let b = t * DV;
            acc0 += w * kv[b + c0]; acc1 += w * kv[b + c1]; acc2 += w * kv[b + c2]; acc3 += w * kv[b + c3];
            acc4 += w * kv[b + c4]; acc5 += w * kv[b + c5]; acc6 += w * kv[b + c6]; acc7 += w * kv[b + c7];
        }
    }
    if (live) {
        let acc = array<vec4<f32>, NV>(acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7);
        for (var j = 0u; j < NV; j++) {
            let c = tq + j * TPQ;
            if (c < DV) {
                let o = acc[j] / l;
                out[qb + 4u * c] = o.x;
                out[qb + 4u * c + 1u] = o.y;
                out[qb + 4u * c + 2u] = o.z;
                out[qb + 4u * c + 3u] = o.w;
            }
        }
    }
}

// The tile's K rows (V rows with `values`) into kv, zero past its n keys, in a fixed count of steps so that
// the loads issue together.
fn stage_tile(lid: u32, t0: u32, n: u32, kb: u32, kv_dim: u32, values: bool) {
    for (var j = 0u; j < (BC * DV + WG - 1u) / WG; j++) {
        let e = lid + j * WG;
        let t = e / DV;
        if (e < BC * DV) {
            var v = vec4<f32>(0.0);
            if (t < n) {
                let row = (t0 + t) % p.ring;
                if (values) {
                    v = v_get4(row, kb + 4u * (e % DV), kv_dim);
                } else {
                    v = k_get4(row, kb + 4u * (e % DV), kv_dim);
                }
            }
            kv[e] = v;
        }
    }
}

// Four of the query's values from four `c` of its head (zero past the head, or for a thread with no vector).
fn query4(qb: u32, c: u32, live: bool, qscale: f32) -> vec4<f32> {
    if (!live || c >= DV) {
        return vec4<f32>(0.0);
    }
    let i = qb + 4u * c;
    return vec4<f32>(q[i], q[i + 1u], q[i + 2u], q[i + 3u]) * qscale;
}

// The score of tile key t (cache position `key`) for the vector whose partials start at red[pv]: -3e38 where
// the row at `pos` does not attend to it.
fn score(t: u32, key: u32, pv: u32, lo: u32, pos: u32) -> f32 {
    if (key < lo || key > pos) {
        return -3.0e38;
    }
    var s = 0.0;
    for (var u = 0u; u < TPQ; u++) {
        s += red[t * WG + pv + u];
    }
    return softcapped(s, p.softcap);
}
