// Mixture-of-experts router, a workgroup per row: the probabilities of the row's n_expert logits
// (softmax, or sigmoid with SIGMOID), the k experts of highest probability plus `bias` (BIAS; the bias
// only selects), first index on ties, and their probabilities divided by their sum (at least SUM_MIN,
// as llama.cpp clamps it) with `norm`. Output row: [k weights | k expert ids as floats].
// The threads share the experts out (expert e to thread e % WG); the softmax's max and sum, and each of
// the k picks, are reductions over the workgroup. Pick j is the best expert that ranks after pick j - 1,
// so no per-row list is kept.
// Dispatch: rows workgroups, spilling into y past 65535.

struct P {
    n_expert: u32,
    k: u32,
    rows: u32,
    norm: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;    // [rows, n_expert]
@group(0) @binding(1) var<storage, read> bias: array<f32>;      // [n_expert], read with BIAS
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [rows, 2k]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;   // a power of two, at most PICK_WG
override SIGMOID: bool = false;
override BIAS: bool = false;

const SUM_MIN: f32 = 6.103515625e-5;

var<workgroup> red_v: array<f32, WG>;   // the softmax's max and sum
var<private> m: f32;     // softmax: the largest logit
var<private> inv: f32;   // softmax: 1 / the sum of exponentials

fn prob(l: f32) -> f32 {
    if (SIGMOID) {
        return 1.0 / (1.0 + exp(-l));
    }
    return exp(l - m) * inv;
}

fn score(l: f32, e: u32) -> f32 {
    if (BIAS) {
        return prob(l) + bias[e];
    }
    return prob(l);
}

// The workgroup's max (MAX) or sum of v, at every thread.
fn reduce(v: f32, lid: u32, MAX: bool) -> f32 {
    red_v[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_v[lid] = select(red_v[lid] + red_v[lid + s], max(red_v[lid], red_v[lid + s]), MAX);
        }
        workgroupBarrier();
    }
    let r = red_v[0];
    workgroupBarrier();   // all have read it before the next reduction writes
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_wg(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let x0 = r * p.n_expert;
    var hi = -3.0e38;
    for (var e = lid; e < p.n_expert; e += WG) {
        hi = max(hi, logits[x0 + e]);
    }
    m = reduce(hi, lid, true);
    var s = 0.0;
    for (var e = lid; e < p.n_expert; e += WG) {
        s += exp(logits[x0 + e] - m);
    }
    inv = 1.0 / reduce(s, lid, false);
    let y0 = r * 2u * p.k;
    var prev = 0.0;
    var prev_id = NONE_ID;
    var total = 0.0;
    for (var j = 0u; j < p.k; j++) {
        // this thread's best among its experts that rank after the previous pick
        var best = 0.0;
        var best_id = NONE_ID;
        for (var e = lid; e < p.n_expert; e += WG) {
            let sc = score(logits[x0 + e], e);
            if ((prev_id == NONE_ID || ranks_before(prev, prev_id, sc, e)) && ranks_before(sc, e, best, best_id)) {
                best = sc;
                best_id = e;
            }
        }
        let b = pick_best(best, best_id, lid, WG);
        prev = b.v;
        prev_id = b.i;
        var pr = 0.0;
        if (prev_id == NONE_ID) {   // a row of NaNs (padding): any valid id, and nothing ranks after it
            prev_id = 0u;
            prev = -3.0e38;
        } else {
            pr = prob(logits[x0 + prev_id]);
        }
        total += pr;
        if (lid == 0u) {
            y[y0 + j] = pr;
            y[y0 + p.k + j] = f32(prev_id);
        }
    }
    if (p.norm != 0u && lid == 0u) {
        let d = max(total, SUM_MIN);
        for (var j = 0u; j < p.k; j++) {
            y[y0 + j] = y[y0 + j] / d;
        }
    }
}
