// One-row matmul (decode, GEMV): y[o0 + j] = sum_k x[k] * W[j, k] for the part's rows j < n, with
// optional fusions that save dispatches:
//   NORM: x is first RMS-normalized and scaled by g (the RMSNorm before the matmul);
//   GLU:  rows j (gate) and n + j (up) of the buffer give y = act(gate . x) * (up . x);
//   RES:  y += res (the residual add after the matmul).
// EXPERTS (mixture of experts, the decode step of ExpertMatmul): the buffer holds matrices of n rows one
// after another, and `res` (binding 3) holds the route instead ([EXPERTS weights | EXPERTS ids], route.wgsl);
// slot j multiplies x (or with X_SLOT x's j-th k values) by expert id_j's matrix. Without COMBINE the
// slots are the dispatch's z and slot j writes y[o0 + j n ...]; with COMBINE each group loops over the
// slots and writes their sum weighted by the route (no dispatch and no buffer for the slots' outputs).
// With GLU the up matrices follow all N_EXPERT gate matrices: expert e's up matrix is matrix N_EXPERT + e.
// XR > 1 (batched decode: one row of x a sequence): x holds XR rows of k, y and res XR rows of y_stride, and a
// group computes ROWS (1, 2 or 4) weight rows against every row of x: the step reads and decodes each unit of
// weights once (step_w), and each row of x, read once for the ROWS rows, meets them from registers (step_wx);
// the group's ROWS x XR sums (at most 16) take the slots of rows and up rows (d, d2, u, u2). With RES and Q8
// only (the plan keeps NORM and GLU out of many-row matmuls).
// A group of TPR threads (a power of two) computes ROWS neighbouring rows; a workgroup holds WG / TPR
// groups. A row is cut into units (the weight type's step says how many weights a unit holds:
// quant/<TYPE>.matmul_row.wgsl, or the generic quant/matmul_row.wgsl); thread t of a group takes
// units t, t + TPR, ..., UPI of them an iteration, and reads each unit's x once for all ROWS rows
// (and their up rows): x is 4 bytes a weight where a Q4_K weight is 4.5 bits, so reading it once a
// row cost more than the weights. Per-row work is written out, not looped (rows4, unit_acc): with
// loops over rows, arrays of sums and one unit an iteration it ran 1.2-1.5x slower on an H200. A
// tree in workgroup memory then sums each row's TPR partial sums.
// Q8: x (times g with NORM) goes through its 8-bit round trip first (reference.q8_round_trip): the workgroup
// quantizes it, XQ values at a time, into workgroup memory (blocks of 32 signed bytes, 4 a word, and a scale
// each), no dispatch of its own, and the steps read that copy: through xg (as floats), or as packed bytes for
// dot4I8Packed where a type's step has an integer path (q8_word, q8_scale). With NORM, x's sum of squares
// comes from the quantizing threads and is summed over the whole workgroup.
// Dispatch: ceil(n / (ROWS * WG / TPR)) workgroups, spilling into y past 65535 (z: EXPERTS slots
// without COMBINE).

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,          // rows of this weight part (gate rows with GLU)
    row_bytes: u32,
    o0: u32,         // first output column of this part
    w0: u32,         // byte offset of the part's first row in the weight buffer
    eps: f32,        // NORM's epsilon
    y_stride: u32,   // XR > 1: floats a row of y and res
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [XR, k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [XR, y_stride]: o0 + n ... a row
@group(0) @binding(3) var<storage, read> res: array<f32>;       // like y: added with RES; the route with EXPERTS
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
const MAX_XR: u32 = 16u;    // read by the host (plan.GEMV_MAX_XR)
override XR: u32 = 1u;      // rows of x (see the top): 1 .. MAX_XR; with XR > 1, ROWS is 1, 2 or 4
override TILE: u32 = ROWS * XR;   // sums a group stores
override UPI: u32 = 2u;   // units a thread takes per loop iteration (1, 2): more loads in flight
override Q8: bool = false;   // x through its 8-bit round trip (see the top)
override XQ: u32 = 4096u;    // Q8: values of x quantized at a time (a multiple of 256)
override EXPERTS: u32 = 0u;  // slots a row (see the top); 0: one matrix
override X_SLOT: bool = false;
override COMBINE: bool = false;
override N_EXPERT: u32 = 1u;   // GLU with EXPERTS: gate matrices before the first up matrix

var<private> wb: u32;   // the byte where the matrix (the slot's expert's) starts
var<private> xo: u32;   // x's first group (the slot's, with X_SLOT; the row's, with XR > 1)
var<private> xqw: u32;  // Q8: the row's first word in xq (XR > 1)

// Partial sums, in slots of WG vec4s: rows 0..3 of a group (and 4..7 with ROWS > 4), then the up
// rows' (GLU), then x's sum of squares (NORM) in x; with XR > 1 the tile's sums, 4 a slot.
const RED_D: u32 = 0u;
const RED_D2: u32 = 1u;
override HAS_D2: bool = TILE > 4u;
override HAS_U: bool = GLU != 0u || TILE > 8u;
override HAS_U2: bool = (GLU != 0u && ROWS > 4u) || TILE > 12u;
override RED_U: u32 = select(1u, 2u, HAS_D2);
override RED_S: u32 = RED_U * select(1u, 2u, HAS_U);
var<workgroup> red: array<vec4<f32>, WG * (RED_S + select(0u, 1u, NORM))>;

// Q8: the chunk of x in workgroup memory (sized 1 without Q8): 4 signed bytes a word, a scale per 32
// values, XQ values a row of x; the chunk starts at x's group xq0.
override XQ_WORDS: u32 = select(1u, XR * XQ / 4u, Q8);
override XQ_BLOCKS: u32 = select(1u, XR * XQ / 32u, Q8);
var<workgroup> xq: array<u32, XQ_WORDS>;
var<workgroup> xd: array<f32, XQ_BLOCKS>;
var<private> xq0: u32;

// x's group G of 4 values, scaled by the norm weight with NORM.
fn xn(G: u32) -> vec4<f32> {
    if (NORM) {
        return x[xo + G] * g[G];
    }
    return x[xo + G];
}

// For the steps: xn(G), or with Q8 its 8-bit round trip (sq(G) below: its sum of squares, unused with Q8).
fn xg(G: u32) -> vec4<f32> {
    if (Q8) {
        return q8_scale(G) * i8x4(q8_word(G));
    }
    return xn(G);
}

// For the steps' integer paths (Q8): x's group G as 4 signed bytes, and the scale of its block of 32.
fn q8_word(G: u32) -> u32 {
    return xq[xqw + G - xq0];
}

fn q8_scale(G: u32) -> f32 {
    return xd[(xqw + G - xq0) >> 3u];
}

// The sum of a word's 4 signed bytes.
fn q8_sum(v: u32) -> i32 {
    return dot4I8Packed(v, 0x01010101u);
}

// Q8: quantize x's groups xq0 .. xq0 + ng (ng a multiple of 8; of each row of x) into xq and xd, a block
// of 32 a thread; returns this thread's share of their sum of squares (for NORM).
fn quantize_chunk(lid: u32, ng: u32) -> f32 {
    var ss = 0.0;
    let nb = ng / 8u;   // blocks a row
    for (var e = lid; e < XR * nb; e += WG) {
        let r = e / nb;
        if (XR > 1u) {
            xo = r * (p.k / 4u);
        }
        let b = r * (XQ / 32u) + e % nb;   // the block's place in xd (and its 8 words' in xq)
        let G = xq0 + 8u * (e % nb);
        let v0 = xn(G);
        let v1 = xn(G + 1u);
        let v2 = xn(G + 2u);
        let v3 = xn(G + 3u);
        let v4 = xn(G + 4u);
        let v5 = xn(G + 5u);
        let v6 = xn(G + 6u);
        let v7 = xn(G + 7u);
        if (NORM) {
            ss += sq(G) + sq(G + 1u) + sq(G + 2u) + sq(G + 3u) + sq(G + 4u) + sq(G + 5u) + sq(G + 6u) + sq(G + 7u);
        }
        let m4 = max(max(max(abs(v0), abs(v1)), max(abs(v2), abs(v3))), max(max(abs(v4), abs(v5)), max(abs(v6), abs(v7))));
        let s = q8_scales(m4);
        let id = s.y;
        xd[b] = s.x;
        xq[8u * b] = pack_i8(v0 * id);
        xq[8u * b + 1u] = pack_i8(v1 * id);
        xq[8u * b + 2u] = pack_i8(v2 * id);
        xq[8u * b + 3u] = pack_i8(v3 * id);
        xq[8u * b + 4u] = pack_i8(v4 * id);
        xq[8u * b + 5u] = pack_i8(v5 * id);
        xq[8u * b + 6u] = pack_i8(v6 * id);
        xq[8u * b + 7u] = pack_i8(v7 * id);
    }
    return ss;
}

// 4 values in [-127, 127], rounded (ties to even), as signed bytes of a word.
fn pack_i8(v: vec4<f32>) -> u32 {
    let b = bitcast<vec4<u32>>(vec4<i32>(round(v))) & vec4<u32>(0xffu);
    return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

fn sq(G: u32) -> f32 {
    return dot(x[xo + G], x[xo + G]);
}

// The low and the high nibbles of v's 4 bytes, as floats.
fn nib_lo(v: u32) -> vec4<f32> {
    return ub4(v & 0x0f0f0f0fu);
}

fn nib_hi(v: u32) -> vec4<f32> {
    return ub4((v >> 4u) & 0x0f0f0f0fu);
}

// For steps whose unit is 32 neighbouring weights (`alias XU = X32;`): x's groups 8u .. 8u + 3 (lo) and
// 8u + 4 .. 8u + 7 (hi), and their sum of squares with NORM.
struct X32 {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
    ss: f32,
}

fn x32(u: u32) -> X32 {
    var xu: X32;
    let G = 8u * u;
    xu.lo = mat4x4<f32>(xg(G), xg(G + 1u), xg(G + 2u), xg(G + 3u));
    xu.hi = mat4x4<f32>(xg(G + 4u), xg(G + 5u), xg(G + 6u), xg(G + 7u));
    if (NORM) {
        xu.ss = sq(G) + sq(G + 1u) + sq(G + 2u) + sq(G + 3u) + sq(G + 4u) + sq(G + 5u) + sq(G + 6u) + sq(G + 7u);
    }
    return xu;
}

// For the K-quant steps whose unit is a sub-block pair's 16 positions (`alias XU = XK;`, Q4_K's layout): x at
// the low nibbles (groups G .. G + 3) and at the high ones (G + 8 .. G + 11), their sums for the mins, and with Q8
// the same as signed bytes and their blocks' scales.
struct XK {
    lo: mat4x4<f32>,   // x at the low nibbles (4 columns of 4)
    hi: mat4x4<f32>,   // x at the high nibbles
    sl: f32,           // their sums (for the mins)
    sh: f32,
    ss: f32,
    ql: vec4<u32>,     // Q8: x at the low nibbles as signed bytes, and at the high ones
    qh: vec4<u32>,
    dl: f32,           // Q8: their blocks' scales
    dh: f32,
}

fn xk(u: u32) -> XK {
    var xu: XK;
    let G = (u >> 3u) * 64u + ((u >> 1u) & 3u) * 16u + (u & 1u) * 4u;   // x's group at the first low nibble
    if (Q8) {
        xu.ql = vec4<u32>(q8_word(G), q8_word(G + 1u), q8_word(G + 2u), q8_word(G + 3u));
        xu.qh = vec4<u32>(q8_word(G + 8u), q8_word(G + 9u), q8_word(G + 10u), q8_word(G + 11u));
        xu.dl = q8_scale(G);
        xu.dh = q8_scale(G + 8u);
        xu.sl = xu.dl * f32(q8_sum(xu.ql.x) + q8_sum(xu.ql.y) + q8_sum(xu.ql.z) + q8_sum(xu.ql.w));
        xu.sh = xu.dh * f32(q8_sum(xu.qh.x) + q8_sum(xu.qh.y) + q8_sum(xu.qh.z) + q8_sum(xu.qh.w));
        return xu;
    }
    xu.lo = mat4x4<f32>(xg(G), xg(G + 1u), xg(G + 2u), xg(G + 3u));
    xu.hi = mat4x4<f32>(xg(G + 8u), xg(G + 9u), xg(G + 10u), xg(G + 11u));
    xu.sl = hsum(xu.lo[0] + xu.lo[1] + xu.lo[2] + xu.lo[3]);
    xu.sh = hsum(xu.hi[0] + xu.hi[1] + xu.hi[2] + xu.hi[3]);
    if (NORM) {
        xu.ss = sq(G) + sq(G + 1u) + sq(G + 2u) + sq(G + 3u) + sq(G + 8u) + sq(G + 9u) + sq(G + 10u) + sq(G + 11u);
    }
    return xu;
}

// The sum of a vector's components.
fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The byte where row r of the group starting at row j0 starts: rows past the part's end repeat its last
// row (read, never stored), so a group has no branch per row.
fn row_at(j0: u32, r: u32) -> u32 {
    return wb + min(j0 + r, p.n - 1u) * p.row_bytes;
}

// Unit u of rows r0 .. r0 + 3 of the group (those below ROWS), `off` bytes on (the up rows' offset).
fn rows4(j0: u32, r0: u32, off: u32, u: u32, xu: XU) -> vec4<f32> {
    var d = vec4<f32>(0.0);
    d.x = step_wx(step_w(row_at(j0, r0) + off, u), xu);
    if (r0 + 1u < ROWS) {
        d.y = step_wx(step_w(row_at(j0, r0 + 1u) + off, u), xu);
    }
    if (r0 + 2u < ROWS) {
        d.z = step_wx(step_w(row_at(j0, r0 + 2u) + off, u), xu);
    }
    if (r0 + 3u < ROWS) {
        d.w = step_wx(step_w(row_at(j0, r0 + 3u) + off, u), xu);
    }
    return d;
}

struct Acc {
    d: vec4<f32>,    // rows 0..3 (XR > 1: the tile's sums 0..3)
    d2: vec4<f32>,   // rows 4..7 (4..7)
    u: vec4<f32>,    // their up rows (8..11)
    u2: vec4<f32>,   // (12..15)
    ss: f32,
}

// XR > 1: v into the tile's sum s, through a one-hot vector rather than an index (which compilers may send
// through memory).
fn tile_add(a: ptr<function, Acc>, s: u32, v: f32) {
    let d = v * vec4<f32>(vec4<u32>(s & 3u) == vec4<u32>(0u, 1u, 2u, 3u));
    if (s < 4u) {
        (*a).d += d;
    } else if (s < 8u) {
        (*a).d2 += d;
    } else if (s < 12u) {
        (*a).u += d;
    } else {
        (*a).u2 += d;
    }
}

// Unit u of all the group's rows: x read once.
fn unit_acc(a: ptr<function, Acc>, j0: u32, u: u32) {
    if (XR > 1u) {
        // weight row i against row r of x into the tile's sum i XR + r
        let w0 = step_w(row_at(j0, 0u), u);
        var w1 = w0;
        var w2 = w0;
        var w3 = w0;
        if (ROWS > 1u) {
            w1 = step_w(row_at(j0, 1u), u);
        }
        if (ROWS > 2u) {
            w2 = step_w(row_at(j0, 2u), u);
            w3 = step_w(row_at(j0, 3u), u);
        }
        for (var r = 0u; r < XR; r++) {
            xo = r * (p.k / 4u);
            xqw = r * (XQ / 4u);
            let xu = step_x(u);
            tile_add(a, r, step_wx(w0, xu));
            if (ROWS > 1u) {
                tile_add(a, XR + r, step_wx(w1, xu));
            }
            if (ROWS > 2u) {
                tile_add(a, 2u * XR + r, step_wx(w2, xu));
                tile_add(a, 3u * XR + r, step_wx(w3, xu));
            }
        }
        return;
    }
    let xu = step_x(u);
    if (NORM && !Q8) {
        (*a).ss += xu.ss;
    }
    let up = N_EXPERT * p.n * p.row_bytes;   // from a gate row to its up row
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
    let cu = select(nu, XQ / UNIT, Q8);  // units a chunk of x (Q8), else all
    var o0 = p.o0;
    var wd = vec4<f32>(0.0);   // COMBINE: the slots' weighted sums of rows 0..3 (and 4..7)
    var wd2 = vec4<f32>(0.0);
    for (var s = 0u; s < select(1u, EXPERTS, COMBINE); s++) {
        wb = p.w0;
        xo = 0u;
        if (EXPERTS > 0u) {
            let j = select(wid.z, s, COMBINE);
            wb += u32(res[EXPERTS + j]) * p.n * p.row_bytes;
            xo = select(0u, j * (p.k / 4u), X_SLOT);
            o0 += select(j * p.n, 0u, COMBINE);
        }
        for (var u0 = 0u; u0 < nu; u0 += cu) {
            let u1 = min(u0 + cu, nu);
            if (Q8) {
                workgroupBarrier();   // every thread is done with the previous chunk
                xq0 = u0 * (UNIT / 4u);
                a.ss += quantize_chunk(lid, (u1 - u0) * (UNIT / 4u));
                workgroupBarrier();
            }
            var u = u0 + t;
            if (UPI > 1u) {
                for (; u + TPR < u1; u += 2u * TPR) {
                    unit_acc(&a, j0, u);
                    unit_acc(&a, j0, u + TPR);
                }
            }
            for (; u < u1; u += TPR) {
                unit_acc(&a, j0, u);
            }
        }
        if (COMBINE) {
            wd += res[s] * a.d;
            wd2 += res[s] * a.d2;
            a.d = vec4<f32>(0.0);
            a.d2 = vec4<f32>(0.0);
        }
    }
    if (COMBINE) {
        a.d = wd;
        a.d2 = wd2;
    }
    red[RED_D * WG + lid] = a.d;
    if (HAS_D2) {
        red[RED_D2 * WG + lid] = a.d2;
    }
    if (HAS_U) {
        red[RED_U * WG + lid] = a.u;
    }
    if (HAS_U2) {
        red[(RED_U + 1u) * WG + lid] = a.u2;
    }
    if (NORM) {
        red[RED_S * WG + lid] = vec4<f32>(a.ss);
    }
    workgroupBarrier();
    if (Q8 && NORM) {
        // the quantizing threads' sums of squares: down to lanes 0 .. TPR - 1, which the tree below sums into lane 0
        for (var s = WG / 2u; s >= TPR; s >>= 1u) {
            if (lid < s) {
                red_add(RED_S, lid, s);
            }
            workgroupBarrier();
        }
    }
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_add(RED_D, lid, s);
            if (HAS_D2) {
                red_add(RED_D2, lid, s);
            }
            if (HAS_U) {
                red_add(RED_U, lid, s);
            }
            if (HAS_U2) {
                red_add(RED_U + 1u, lid, s);
            }
            if (NORM) {
                red_add(RED_S, lid, s);
            }
        }
        workgroupBarrier();
    }
    // thread t of the group stores sum t from its lane 0: row j0 + t (XR > 1: weight row j0 + t / XR against
    // row t % XR of x)
    let xr = select(0u, t % XR, XR > 1u);
    let j = j0 + select(t, t / XR, XR > 1u);
    if (t < TILE && j < p.n) {
        let l0 = lid - t;
        let c = t & 3u;
        var v = red[(RED_D + t / 4u) * WG + l0][c];
        var w = 0.0;
        if (GLU != 0u) {
            w = red[(RED_U + t / 4u) * WG + l0][c];
        }
        if (NORM) {
            let inv = inverseSqrt(red[RED_S * WG + select(l0, 0u, Q8)].x / f32(p.k) + p.eps);
            v *= inv;
            w *= inv;
        }
        if (GLU != 0u) {
            v = activate(GLU, v) * w;
        }
        let at = xr * p.y_stride + o0 + j;
        if (RES) {
            v += res[at];
        }
        y[at] = v;
    }
}
