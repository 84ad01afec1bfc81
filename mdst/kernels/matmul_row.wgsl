// One-row matmul (decode, GEMV): y[o0 + j] = sum_k x[k] * W[j, k] for the part's rows j < n, with
// optional fusions that save dispatches:
//   NORM: x is first RMS-normalized and scaled by g (the RMSNorm before the matmul);
//   GLU:  rows j (gate) and n + j (up) of the buffer give y = act(gate . x) * (up . x);
//   RES:  y += res (the residual add after the matmul).
// WG / TPR output rows per workgroup, TPR threads per row (a power of two). A thread takes GPT
// consecutive groups of 4 weights at a time (GPT = 1: neighbouring threads read neighbouring
// bytes; GPT = 8: 32 weights of one block, whose start is computed once), striding over the row;
// a tree reduction in workgroup memory sums each row's threads.
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
override GPT: u32 = 8u;   // groups of 4 weights a thread takes at a time: 1, 2, 4 or 8

var<workgroup> red: array<vec3<f32>, WG>;   // (gate or plain dot, up dot, sum of squares)

// One group of 4 weights: group gi of the blocks at bytes b (and bu, the up row's), x's group G.
fn group_dot(b: u32, bu: u32, gi: u32, G: u32) -> vec3<f32> {
    var xv = x[G];
    var r = vec3<f32>(0.0);
    if (NORM) {
        r.z = dot(xv, xv);
        xv *= g[G];
    }
    r.x = dot(deq4(b, gi), xv);
    if (GLU != 0u) {
        r.y = dot(deq4(bu, gi), xv);
    }
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = lid % TPR;
    let j = flat_wg(wid, nwg) * (WG / TPR) + lid / TPR;
    var acc = vec3<f32>(0.0);
    if (j < p.n) {
        let kg = p.k / 4u;           // groups of 4 weights in the row
        let gpb = QK / 4u;           // groups per block
        let base = p.w0 + j * p.row_bytes;
        let up = base + p.n * p.row_bytes;
        for (var c = t * GPT; c < kg; c += TPR * GPT) {
            if (gpb >= GPT && c + GPT <= kg) {
                // GPT groups of one block: its start computed once, and no bounds check between the
                // loads, so the compiler can issue them together (more bytes in flight per thread)
                let b = (c / gpb) * QB;
                for (var i = 0u; i < GPT; i++) {
                    acc += group_dot(base + b, up + b, c % gpb + i, c + i);
                }
            } else {
                for (var i = 0u; i < GPT; i++) {
                    let G = c + i;
                    if (G < kg) {
                        let o = (G / gpb) * QB;
                        acc += group_dot(base + o, up + o, G % gpb, G);
                    }
                }
            }
        }
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
