// Mixture-of-experts router, an invocation per row: the probabilities of the row's n_expert logits
// (softmax, or sigmoid with SIGMOID), the k experts of highest probability plus `bias` (BIAS; the bias
// only selects), first index on ties, and their probabilities divided by their sum (at least SUM_MIN,
// as llama.cpp clamps it) with `norm`. Output row: [k weights | k expert ids as floats].
// The k picks are k passes over the row, each taking the best that ranks after the previous pick, so
// no per-row list is kept.
// Dispatch: ceil(rows / WG).

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

override WG: u32 = 64u;
override SIGMOID: bool = false;
override BIAS: bool = false;

const SUM_MIN: f32 = 6.103515625e-5;
const NONE: u32 = 0xffffffffu;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.rows) {
        return;
    }
    let x0 = r * p.n_expert;
    var m = -3.0e38;   // softmax: the largest logit and 1 / the sum of exponentials
    for (var e = 0u; e < p.n_expert; e++) {
        m = max(m, logits[x0 + e]);
    }
    var s = 0.0;
    for (var e = 0u; e < p.n_expert; e++) {
        s += exp(logits[x0 + e] - m);
    }
    let inv = 1.0 / s;
    let y0 = r * 2u * p.k;
    var prev = 0.0;
    var prev_id = NONE;
    var total = 0.0;
    for (var j = 0u; j < p.k; j++) {
        var best = 0.0;
        var best_id = NONE;
        var best_p = 0.0;
        for (var e = 0u; e < p.n_expert; e++) {
            let l = logits[x0 + e];
            var pr = exp(l - m) * inv;
            if (SIGMOID) {
                pr = 1.0 / (1.0 + exp(-l));
            }
            var sc = pr;
            if (BIAS) {
                sc += bias[e];
            }
            let after = prev_id == NONE || sc < prev || (sc == prev && e > prev_id);
            if (after && (best_id == NONE || sc > best)) {
                best = sc;
                best_id = e;
                best_p = pr;
            }
        }
        if (best_id == NONE) {   // a row of NaNs (padding): any valid id
            best_id = 0u;
        }
        y[y0 + j] = best_p;
        y[y0 + p.k + j] = f32(best_id);
        total += best_p;
        prev = best;
        prev_id = best_id;
    }
    if (p.norm != 0u) {
        let d = max(total, SUM_MIN);
        for (var j = 0u; j < p.k; j++) {
            y[y0 + j] = y[y0 + j] / d;
        }
    }
}
