// Matmul through each row's chosen experts (route.wgsl's output [k weights | k ids]): W holds n_expert
// matrices of n rows one after another, and this part of it experts [e0, e1) from byte w0. Only the
// chosen experts' rows are read; the expert id comes from the route buffer, so the host never reads it.
// Without COMBINE: Y[r, j n + o] = X_j[r] . W[e_rj, o] for the slots j whose expert this part holds
// (other parts' dispatches write the rest). With COMBINE: Y[r, o] = sum over those slots of
// w_rj (X_j[r] . W[e_rj, o]), added to Y with `acc` (parts after the first).
// With GLU (not with COMBINE): act(X_j[r] . W[e_rj, o]) * (X_j[r] . W[N_EXPERT + e_rj, o]), the up matrices
// following all N_EXPERT gate matrices (layout.py stores them so; such a pair is never split into parts).
// X_j[r] is X's row r (x_slot 0) or its columns [j k, (j + 1) k) (x_slot k). An invocation per output,
// generic over the weight type (deq4): CPU adapters' kernel, and GPUs' where an expert tensor is split across
// bindings (GPUs otherwise take matmul_row's and matmul_rows' EXPERTS modes).
// Dispatch: (ceil(n / WG), rows, COMBINE ? 1 : used).

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,          // rows of one expert's matrix
    row_bytes: u32,
    w0: u32,         // byte offset of expert e0's first row in the weight buffer
    e0: u32,
    e1: u32,
    used: u32,       // experts a row (the route has 2 * used columns)
    x_slot: u32,     // 0, or k: slot j reads X's j-th k columns
    x_stride: u32,   // floats per row of X
    acc: u32,        // COMBINE: add to Y rather than write it
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [rows, x_stride]
@group(0) @binding(2) var<storage, read> route: array<f32>;     // [rows, 2 used]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;   // [rows, used n], or [rows, n] with COMBINE
@group(0) @binding(4) var<uniform> p: P;

override WG: u32 = 64u;
override COMBINE: bool = false;
override GLU: u32 = 0u;        // 0: none; else the activation (common.wgsl's activate)
override N_EXPERT: u32 = 0u;

// Row o of expert e (which this part holds) dotted with the k floats of X from float x0.
fn expert_dot(e: u32, o: u32, x0: u32) -> f32 {
    let b = p.w0 + ((e - p.e0) * p.n + o) * p.row_bytes;
    let gpb = QK / 4u;
    let g0 = x0 / 4u;
    var acc = vec4<f32>(0.0);
    for (var ob = 0u; ob < (p.k / QK) * QB; ob += QB) {
        let g = g0 + (ob / QB) * gpb;
        for (var q = 0u; q < gpb; q++) {
            acc += deq4(b + ob, q) * x[g + q];
        }
    }
    return acc.x + acc.y + acc.z + acc.w;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.x * WG + lid;
    let r = wid.y;
    if (o >= p.n) {
        return;
    }
    let r0 = r * 2u * p.used;
    if (!COMBINE) {
        let j = wid.z;
        let e = u32(route[r0 + p.used + j]);
        if (e >= p.e0 && e < p.e1) {
            let x0 = r * p.x_stride + j * p.x_slot;
            var v = expert_dot(e, o, x0);
            if (GLU != 0u) {
                v = activate(GLU, v) * expert_dot(N_EXPERT + e, o, x0);
            }
            y[(r * p.used + j) * p.n + o] = v;
        }
        return;
    }
    var sum = 0.0;
    for (var j = 0u; j < p.used; j++) {
        let e = u32(route[r0 + p.used + j]);
        if (e >= p.e0 && e < p.e1) {
            sum += route[r0 + j] * expert_dot(e, o, r * p.x_stride + j * p.x_slot);
        }
    }
    if (p.acc != 0u) {
        sum += y[r * p.n + o];
    }
    y[r * p.n + o] = sum;
}
