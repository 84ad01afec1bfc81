// Logit bias, then repetition penalties, on one logits part, in place, before sampling (llama.cpp's
// order and rule): each listed biased token t gets x[t] += bias; then for each distinct recent token t
// seen c times, x[t] is divided by repeat_penalty if positive (multiplied if not), then lowered by
// c * frequency_penalty + presence_penalty. The draw buffer (see common.wgsl) lists the biased tokens
// and their biases, and the distinct recent tokens and their counts. One invocation per listed token.
// Workgroup y takes logits row y with the y-th draw of the buffer (a batched step's rows: DRAW_WORDS each;
// a row that does not draw has empty lists).
// Dispatch: (1, rows) (at most 64 tokens of each list).

struct P {
    cols: u32,       // columns of this part
    col0: u32,       // first vocabulary id of this part
}

@group(0) @binding(0) var<storage, read> draw: array<u32>;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;   // [rows, cols]
@group(0) @binding(2) var<uniform> p: P;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d = wid.y * DRAW_WORDS;   // the row's draw
    let xb = wid.y * p.cols;      // and logits
    if (lid < draw[d + DRAW_N_BIAS]) {
        let t = draw[d + DRAW_BIAS_IDS + lid];
        if (t >= p.col0 && t - p.col0 < p.cols) {
            x[xb + t - p.col0] += bitcast<f32>(draw[d + DRAW_BIAS + lid]);
        }
    }
    storageBarrier();   // a biased token may be a penalized one too: the bias lands first
    if (lid >= draw[d + DRAW_N_HIST]) {
        return;
    }
    let t = draw[d + DRAW_HIST + lid];
    if (t < p.col0 || t - p.col0 >= p.cols) {
        return;
    }
    let i = t - p.col0;
    var v = x[xb + i];
    let rp = bitcast<f32>(draw[d + DRAW_REPEAT]);
    if (v <= 0.0) {
        v *= rp;
    } else {
        v /= rp;
    }
    let c = f32(draw[d + DRAW_COUNTS + lid]);
    x[xb + i] = v - c * bitcast<f32>(draw[d + DRAW_FREQUENCY]) - bitcast<f32>(draw[d + DRAW_PRESENCE]);
}
