// One-row matmul (decode, GEMV): y[o0 + j] = sum_k x[k] * W[j, k] for the part's rows j < n, with
// optional fusions that save dispatches:
//   NORM: x is first RMS-normalized and scaled by g (the RMSNorm before the matmul);
//   GLU:  rows j (gate) and n + j (up) of the buffer give y = act(gate . x) * (up . x);
//   RES:  y += res (the residual add after the matmul).
// WG / TPR output rows per workgroup, TPR threads per row (a power of two). Each thread sums its
// share of the row with lane_dot, the weight type's step (quant/<TYPE>.matmul_row.wgsl, or the
// generic quant/matmul_row.wgsl); a tree reduction in workgroup memory sums each row's threads.
// Dispatch: ceil(n / (WG / TPR)) workgroups, spilling into y past 65535.

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,          // rows of this weight part (gate rows with GLU)
    row_bytes: u32,
    o0: u32,         // first output column of this part
    w0: u32,         // byte offset of the part's first row in the weight buffer
    eps: f32,        // NORM's epsilon
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [o0 + n ...]
@group(0) @binding(3) var<storage, read> res: array<f32>;       // like y: added with RES
@group(0) @binding(4) var<storage, read> g: array<vec4<f32>>;   // [k]: the norm's weight with NORM
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 256u;
override TPR: u32 = 32u;
override NORM: bool = false;
override RES: bool = false;
override GLU: u32 = 0u;   // 0: none; else the activation (see activate)
override GPT: u32 = 8u;   // the generic step: groups of 4 weights a thread takes at a time (1, 2, 4, 8)

var<workgroup> red: array<vec3<f32>, WG>;   // (gate or plain dot, up dot, sum of squares)

// For the steps: x's group G of 4 values, scaled by the norm weight with NORM; its sum of squares.
fn xg(G: u32) -> vec4<f32> {
    if (NORM) {
        return x[G] * g[G];
    }
    return x[G];
}

fn sq(G: u32) -> f32 {
    return dot(x[G], x[G]);
}

// For the types' own steps: the 8 groups of x one unit of 32 weights reads, G + ga[i] (column i of
// a) and G + gb[i] (column i of b); ss: their sum of squares with NORM (else 0).
struct XUnit {
    a: mat4x4<f32>,
    b: mat4x4<f32>,
    ss: f32,
}

fn x_unit(G: u32, ga: vec4<u32>, gb: vec4<u32>) -> XUnit {
    var u: XUnit;
    u.a = mat4x4<f32>(xg(G + ga.x), xg(G + ga.y), xg(G + ga.z), xg(G + ga.w));
    u.b = mat4x4<f32>(xg(G + gb.x), xg(G + gb.y), xg(G + gb.z), xg(G + gb.w));
    if (NORM) {
        u.ss = sq(G + ga.x) + sq(G + ga.y) + sq(G + ga.z) + sq(G + ga.w)
             + sq(G + gb.x) + sq(G + gb.y) + sq(G + gb.z) + sq(G + gb.w);
    }
    return u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = lid % TPR;
    let j = flat_wg(wid, nwg) * (WG / TPR) + lid / TPR;
    var acc = vec3<f32>(0.0);
    if (j < p.n) {
        let base = p.w0 + j * p.row_bytes;
        acc = lane_dot(base, base + p.n * p.row_bytes, t);
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (t == 0u && j < p.n) {
        var v = red[lid].x;
        var u = red[lid].y;
        if (NORM) {
            let inv = inverseSqrt(red[lid].z / f32(p.k) + p.eps);
            v *= inv;
            u *= inv;
        }
        if (GLU != 0u) {
            v = activate(GLU, v) * u;
        }
        if (RES) {
            v += res[p.o0 + j];
        }
        y[p.o0 + j] = v;
    }
}
