// Matmul with four output features and R activation rows per invocation, accumulated in
// registers: Y[r, o0 + j] = sum_k X[r, k] * W[j, k]. Each weight is decoded once per R rows and
// each activation read once per four outputs, with no workgroup memory or barriers. This suits
// CPU adapters (lavapipe, SwiftShader), where memory operations dominate; R = 1 is decode.
// The fusions of matmul_row are available: NORM (RMSNorm of each X row with weight g first),
// GLU (rows j and n + j of the buffer: act(gate) * up), RES (Y += res), and Q8: each X row (normalized) through
// its 8-bit round trip (reference.q8_round_trip), computed here in f32 with a block's scale taken at its first
// group; k is then a multiple of 32 and the weight blocks of 32 or 256.
// Dispatch: (ceil(n / (4 * WG)), ceil(m / R)).

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,          // rows of this part (gate rows with GLU)
    row_bytes: u32,
    o0: u32,
    m: u32,          // activation rows
    y_stride: u32,   // floats per row of Y
    w0: u32,         // byte offset of the part's first row in the weight buffer
    eps: f32,        // NORM's epsilon
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [m, k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [m, y_stride]
@group(0) @binding(3) var<storage, read> res: array<f32>;       // like y: added with RES
@group(0) @binding(4) var<storage, read> gw: array<vec4<f32>>;  // [k]: the norm's weight with NORM
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 64u;
override R: u32 = 1u;   // at most 8
override NORM: bool = false;
override RES: bool = false;
override GLU: u32 = 0u;   // 0: none; else the activation (see activate)
override Q8: bool = false;

// Q8: (d, 1 / d or 0) of the block of 32 values of X row r from group G on, d = amax / 127 (times g with NORM).
fn q8_block(r: u32, G: u32) -> vec2<f32> {
    var m = vec4<f32>(0.0);
    for (var i = 0u; i < 8u; i++) {
        var v = x[r * (p.k / 4u) + G + i];
        if (NORM) {
            v *= gw[G + i];
        }
        m = max(m, abs(v));
    }
    return q8_scales(m);
}

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
    let last = p.n - 1u;
    let b = p.w0 + vec4<u32>(j0, min(j0 + 1u, last), min(j0 + 2u, last), min(j0 + 3u, last)) * p.row_bytes;
    let bu = b + vec4<u32>(p.n * p.row_bytes);   // up rows with GLU
    var acc: array<vec4<f32>, 8>;
    var acc_up: array<vec4<f32>, 8>;
    var ss: array<f32, 8>;
    var qd: array<vec2<f32>, 8>;   // Q8: each row's current block scale
    for (var o = 0u; o < (kg / gpb) * QB; o += QB) {
        let G0 = (o / QB) * gpb;
        // a constant trip count: the compiler unrolls it and loads each shared word of the block once
        for (var q = 0u; q < gpb; q++) {
            let w0 = deq4(b.x + o, q);
            let w1 = deq4(b.y + o, q);
            let w2 = deq4(b.z + o, q);
            let w3 = deq4(b.w + o, q);
            var u0 = vec4<f32>(0.0);
            var u1 = u0;
            var u2 = u0;
            var u3 = u0;
            if (GLU != 0u) {
                u0 = deq4(bu.x + o, q);
                u1 = deq4(bu.y + o, q);
                u2 = deq4(bu.z + o, q);
                u3 = deq4(bu.w + o, q);
            }
            for (var i = 0u; i < R; i++) {
                if (i < rows) {
                    var xv = x[(r0 + i) * kg + G0 + q];
                    if (NORM) {
                        ss[i] += dot(xv, xv);
                        xv *= gw[G0 + q];
                    }
                    if (Q8) {
                        if (q % 8u == 0u) {
                            qd[i] = q8_block(r0 + i, G0 + q);
                        }
                        xv = round(xv * qd[i].y) * qd[i].x;
                    }
                    acc[i] += vec4<f32>(dot(w0, xv), dot(w1, xv), dot(w2, xv), dot(w3, xv));
                    if (GLU != 0u) {
                        acc_up[i] += vec4<f32>(dot(u0, xv), dot(u1, xv), dot(u2, xv), dot(u3, xv));
                    }
                }
            }
        }
    }
    for (var i = 0u; i < rows; i++) {
        var v = acc[i];
        var u = acc_up[i];
        if (NORM) {
            let inv = inverseSqrt(ss[i] / f32(p.k) + p.eps);
            v *= inv;
            u *= inv;
        }
        let base = (r0 + i) * p.y_stride + p.o0 + j0;
        for (var c = 0u; c < 4u; c++) {
            if (j0 + c < p.n) {
                var out = v[c];
                if (GLU != 0u) {
                    out = activate(GLU, out) * u[c];
                }
                if (RES) {
                    out += res[base + c];
                }
                y[base + c] = out;
            }
        }
    }
}
