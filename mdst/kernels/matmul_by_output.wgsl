// Matmul with four output features and R activation rows per invocation, accumulated in
// registers: Y[r, o0 + j] = sum_k X[r, k] * W[j, k]. Each weight is decoded once per R rows and
// each activation read once per four outputs, with no workgroup memory or barriers. This suits
// CPU adapters (lavapipe, SwiftShader), where memory operations dominate; R = 1 is decode.
// Dispatch: (ceil(n / (4 * WG)), ceil(m / R)).

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,
    row_bytes: u32,
    o0: u32,
    m: u32,          // activation rows
    y_stride: u32,   // floats per row of Y
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [m, k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [m, y_stride]
@group(0) @binding(3) var<uniform> p: P;

override WG: u32 = 64u;
override R: u32 = 1u;   // at most 8

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j0 = 4u * (wid.x * WG + lid);
    let r0 = wid.y * R;
    if (j0 >= p.n) {
        return;
    }
    let kg = p.k / 4u;
    let gpb = QK / 4u;
    let rows = min(R, p.m - r0);
    // rows past n repeat the last one: their results are computed but not stored
    let b0 = j0 * p.row_bytes;
    let b1 = min(j0 + 1u, p.n - 1u) * p.row_bytes;
    let b2 = min(j0 + 2u, p.n - 1u) * p.row_bytes;
    let b3 = min(j0 + 3u, p.n - 1u) * p.row_bytes;
    var acc: array<vec4<f32>, 8>;
    for (var o = 0u; o < (kg / gpb) * QB; o += QB) {
        let G0 = (o / QB) * gpb;
        // a constant trip count: the compiler unrolls it and loads each shared word of the block once
        for (var g = 0u; g < gpb; g++) {
            let w0 = deq4(b0 + o, g);
            let w1 = deq4(b1 + o, g);
            let w2 = deq4(b2 + o, g);
            let w3 = deq4(b3 + o, g);
            for (var i = 0u; i < R; i++) {
                if (i < rows) {
                    let xv = x[(r0 + i) * kg + G0 + g];
                    acc[i] += vec4<f32>(dot(w0, xv), dot(w1, xv), dot(w2, xv), dot(w3, xv));
                }
            }
        }
    }
    for (var i = 0u; i < rows; i++) {
        let base = (r0 + i) * p.y_stride + p.o0 + j0;
        for (var c = 0u; c < 4u; c++) {
            if (j0 + c < p.n) {
                y[base + c] = acc[i][c];
            }
        }
    }
}
