// One-row matmul (decode, GEMV): y[o0 + j] = sum_k x[k] * W[j, k] for the part's rows j < n, with
// optional fusions that save dispatches:
//   NORM: x is first RMS-normalized and scaled by g (the RMSNorm before the matmul);
//   GLU:  rows j (gate) and n + j (up) of the buffer give y = act(gate . x) * (up . x);
//   RES:  y += res (the residual add after the matmul).
// A group of TPR threads (a power of two) computes ROWS neighbouring rows; a workgroup holds WG / TPR
// groups. A row is cut into units (the weight type's step says how many weights a unit holds:
// quant/<TYPE>.matmul_row.wgsl, or the generic quant/matmul_row.wgsl); thread t of a group takes
// units t, t + TPR, ..., UPI of them an iteration, and reads each unit's x once for all ROWS rows
// (and their up rows): x is 4 bytes a weight where a Q4_K weight is 4.5 bits, so reading it once a
// row cost more than the weights. Per-row work is written out, not looped (rows4, unit_acc): with
// loops over rows, arrays of sums and one unit an iteration it ran 1.2-1.5x slower on an H200. A
// tree in workgroup memory then sums each row's TPR partial sums.
// Dispatch: ceil(n / (ROWS * WG / TPR)) workgroups, spilling into y past 65535.

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
override ROWS: u32 = 1u;  // rows a group computes: 1 .. MAX_ROWS, at most TPR
override NORM: bool = false;
override RES: bool = false;
override GLU: u32 = 0u;   // 0: none; else the activation (see activate)
override GPT: u32 = 8u;   // the generic step: groups of 4 weights a unit (1, 2, 4, 8)

const MAX_ROWS: u32 = 8u;   // read by the host (plan.GEMV_MAX_ROWS)
override UPI: u32 = 2u;   // units a thread takes per loop iteration (1, 2): more loads in flight

// Partial sums, in slots of WG vec4s: rows 0..3 of a group (and 4..7 with ROWS > 4), then the up
// rows' (GLU), then x's sum of squares (NORM) in x.
const RED_D: u32 = 0u;
const RED_D2: u32 = 1u;
override RED_U: u32 = select(1u, 2u, ROWS > 4u);
override RED_S: u32 = RED_U * select(1u, 2u, GLU != 0u);
var<workgroup> red: array<vec4<f32>, WG * (RED_S + 1u)>;

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

// For the steps: the 4 bytes of v (each below 256) as floats, byte i in component i. Built from
// exponent bits rather than converted: each byte pair goes into the mantissas of two f16 values
// 1024 + b (exact: f16 counts in ones from 1024 to 2048), which unpack2x16float widens.
fn ub4(v: u32) -> vec4<f32> {
    let a = unpack2x16float((v & 0x00ff00ffu) | 0x64006400u) - 1024.0;           // bytes 0, 2
    let b = unpack2x16float(((v >> 8u) & 0x00ff00ffu) | 0x64006400u) - 1024.0;   // bytes 1, 3
    return vec4<f32>(a.x, b.x, a.y, b.y);
}

// The low and the high nibbles of v's 4 bytes, as floats.
fn nib_lo(v: u32) -> vec4<f32> {
    return ub4(v & 0x0f0f0f0fu);
}

fn nib_hi(v: u32) -> vec4<f32> {
    return ub4((v >> 4u) & 0x0f0f0f0fu);
}

// The sum of a vector's components.
fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The byte where row r of the group starting at row j0 starts: rows past the part's end repeat its last
// row (read, never stored), so a group has no branch per row.
fn row_at(j0: u32, r: u32) -> u32 {
    return p.w0 + min(j0 + r, p.n - 1u) * p.row_bytes;
}

// Unit u of rows r0 .. r0 + 3 of the group (those below ROWS), `off` bytes on (the up rows' offset).
fn rows4(j0: u32, r0: u32, off: u32, u: u32, xu: XU) -> vec4<f32> {
    var d = vec4<f32>(0.0);
    d.x = step_dot(row_at(j0, r0) + off, u, xu);
    if (r0 + 1u < ROWS) {
        d.y = step_dot(row_at(j0, r0 + 1u) + off, u, xu);
    }
    if (r0 + 2u < ROWS) {
        d.z = step_dot(row_at(j0, r0 + 2u) + off, u, xu);
    }
    if (r0 + 3u < ROWS) {
        d.w = step_dot(row_at(j0, r0 + 3u) + off, u, xu);
    }
    return d;
}

struct Acc {
    d: vec4<f32>,    // rows 0..3
    d2: vec4<f32>,   // rows 4..7
    u: vec4<f32>,    // their up rows
    u2: vec4<f32>,
    ss: f32,
}

// Unit u of all the group's rows: x read once.
fn unit_acc(a: ptr<function, Acc>, j0: u32, u: u32) {
    let xu = step_x(u);
    let up = p.n * p.row_bytes;   // from a gate row to its up row
    if (NORM) {
        (*a).ss += xu.ss;
    }
    (*a).d += rows4(j0, 0u, 0u, u, xu);
    if (ROWS > 4u) {
        (*a).d2 += rows4(j0, 4u, 0u, u, xu);
    }
    if (GLU != 0u) {
        (*a).u += rows4(j0, 0u, up, u, xu);
        if (ROWS > 4u) {
            (*a).u2 += rows4(j0, 4u, up, u, xu);
        }
    }
}

fn red_add(slot: u32, i: u32, s: u32) {
    red[slot * WG + i] += red[slot * WG + i + s];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    step_init(lid);
    if (STEP_SYNC) {
        workgroupBarrier();
    }
    let t = lid % TPR;
    let j0 = (flat_wg(wid, nwg) * (WG / TPR) + lid / TPR) * ROWS;
    var a: Acc;
    let nu = (p.k + UNIT - 1u) / UNIT;   // the step's units in a row
    var u = t;
    if (UPI > 1u) {
        for (; u + TPR < nu; u += 2u * TPR) {
            unit_acc(&a, j0, u);
            unit_acc(&a, j0, u + TPR);
        }
    }
    for (; u < nu; u += TPR) {
        unit_acc(&a, j0, u);
    }
    red[RED_D * WG + lid] = a.d;
    if (ROWS > 4u) {
        red[RED_D2 * WG + lid] = a.d2;
    }
    if (GLU != 0u) {
        red[RED_U * WG + lid] = a.u;
        if (ROWS > 4u) {
            red[(RED_U + 1u) * WG + lid] = a.u2;
        }
    }
    if (NORM) {
        red[RED_S * WG + lid] = vec4<f32>(a.ss);
    }
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_add(RED_D, lid, s);
            if (ROWS > 4u) {
                red_add(RED_D2, lid, s);
            }
            if (GLU != 0u) {
                red_add(RED_U, lid, s);
                if (ROWS > 4u) {
                    red_add(RED_U + 1u, lid, s);
                }
            }
            if (NORM) {
                red_add(RED_S, lid, s);
            }
        }
        workgroupBarrier();
    }
    // thread r of the group stores row j0 + r from the sums in its lane 0
    let j = j0 + t;
    if (t < ROWS && j < p.n) {
        let l0 = lid - t;
        let c = t & 3u;
        var v = red[(RED_D + t / 4u) * WG + l0][c];
        var w = 0.0;
        if (GLU != 0u) {
            w = red[(RED_U + t / 4u) * WG + l0][c];
        }
        if (NORM) {
            let inv = inverseSqrt(red[RED_S * WG + l0].x / f32(p.k) + p.eps);
            v *= inv;
            w *= inv;
        }
        if (GLU != 0u) {
            v = activate(GLU, v) * w;
        }
        if (RES) {
            v += res[p.o0 + j];
        }
        y[p.o0 + j] = v;
    }
}
