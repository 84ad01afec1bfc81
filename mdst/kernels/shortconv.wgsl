// LFM2's gated short convolution over the step's rows, one invocation per channel:
// y[r, ch] = c[r, ch] * sum_j w[ch, j] * u[t - kernel + 1 + j, ch] with u = b * x, where
// bcx = [b | c | x] and t is the row's position. Inputs before the step come from the
// layer's rolling state (kernel - 1 rows; none before position 0), which is then advanced.
// Each invocation owns its channel of the state, so reading and writing it cannot race.
// Row r is activation row row0 + r (STEP_ROW0).
// Dispatch: ceil(channels / WG).

struct P {
    channels: u32,
    kernel: u32,     // at most 9
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(1) var<storage, read> bcx: array<f32>;           // [rows, 3 * channels]
@group(0) @binding(2) var<storage, read> w: array<f32>;             // [channels, kernel]
@group(0) @binding(3) var<storage, read_write> state: array<f32>;   // [kernel - 1, channels]
@group(0) @binding(4) var<storage, read_write> y: array<f32>;       // [rows, channels]
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ch = gid.x;
    let C = p.channels;
    if (ch >= C) {
        return;
    }
    let hist_len = p.kernel - 1u;
    var hist: array<f32, 8>;   // u at the hist_len positions before the current one, oldest first
    if (step[STEP_POS0] > 0u) {
        for (var j = 0u; j < hist_len; j++) {
            hist[j] = state[j * C + ch];
        }
    }
    for (var r = 0u; r < step[STEP_ROWS]; r++) {
        let at = step[STEP_ROW0] + r;   // where the row sits in the activations
        let row = at * 3u * C;
        let u = bcx[row + ch] * bcx[row + 2u * C + ch];
        var acc = w[ch * p.kernel + hist_len] * u;
        for (var j = 0u; j < hist_len; j++) {
            acc += w[ch * p.kernel + j] * hist[j];
        }
        y[at * C + ch] = bcx[row + C + ch] * acc;
        for (var j = 0u; j + 1u < hist_len; j++) {
            hist[j] = hist[j + 1u];
        }
        hist[hist_len - 1u] = u;
    }
    for (var j = 0u; j < hist_len; j++) {
        state[j * C + ch] = hist[j];
    }
}
