// Many-row matmul (prefill, GEMM) on GPUs: Y[r, o0 + j] = sum_k X[r, k] * W[j, k] (+ R[r, o0 + j]
// with RES) for rows r < m and the part's rows j < n. Each workgroup of WG threads computes a
// ROWS_T x COLS_T tile of Y, stepping through k TK at a time with both operands staged in workgroup
// memory (each weight is dequantized once per ROWS_T activation rows); each thread owns a TR x TC block
// of the tile: rows 4 ty + 4 TY a and outputs 4 tx + 4 TX b (a < TR / 4, b < TC / 4), so neighbouring threads
// read neighbouring vec4s of the staged tiles. The threads form a TY x TX grid: 16 x 16, or for a few rows
// (a batched decode step, a short prompt) 8 x 32 or 4 x 64, whose shorter, wider tiles compute no padding
// rows at the cost of shorter steps.
// Staged values and the products of one step are `half`: in the f16 variant (where the adapter has
// shader-f16) a step's TK products are summed in f16 (packed FMAs), and each step's sums are added to
// f32 accumulators; the f32 variant computes the same in f32.
// With 8-bit activations the host passes X's round trip (q8_round.wgsl) as X.
// EXPERTS (mixture of experts, the many-row ExpertMatmul, grouped): the buffer holds n_expert matrices of n
// rows one after another, the dispatch's z is the expert, and `res` (binding 3) holds expert_groups.wgsl's
// lists instead: [n_expert + 1 starts | the (row, slot) entries r EXPERTS + j, grouped by expert], as
// floats. Workgroup (x, y, e) computes tile y of expert e's entries, reading its weights once for them:
// X's row r (or with X_SLOT row r EXPERTS + j of X as [m EXPERTS, k]) in, Y's row r EXPERTS + j out.
// Tiles past an expert's entries return at once (the host cannot size the dispatch per expert).
// Slices of k (a dispatch's z without EXPERTS; few rows: a tile's walk through all of k is a long chain of
// dependent steps, and a few rows give too few tiles to hide it): workgroup z sums slice z of k only, into
// Y's slice z ([slices, m, y_stride]; no residual), and sum_splits.wgsl adds the slices.
// Dispatch: (ceil(n / COLS_T), ceil(m / ROWS_T), EXPERTS ? n_expert : slices of k).

struct P {
    k: u32,          // weights per row; a multiple of 4
    n: u32,
    row_bytes: u32,
    o0: u32,
    m: u32,          // activation rows
    y_stride: u32,   // floats per row of Y
    w0: u32,         // byte offset of the part's first row in the weight buffer
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [m, k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [m, y_stride]
@group(0) @binding(3) var<storage, read> res: array<f32>;       // [m, y_stride]: added with RES; EXPERTS: the lists
@group(0) @binding(4) var<uniform> p: P;

override RES: bool = false;
override TR: u32 = 4u;   // rows a thread: 4 or 8
override TC: u32 = 4u;   // outputs a thread: 4 or 8
override TY: u32 = 16u;  // thread rows of the grid: 16, 8 or 4
override TX: u32 = WG / TY;
override ROWS_T: u32 = TY * TR;   // rows a tile
override COLS_T: u32 = TX * TC;   // outputs a tile
override TK: u32 = STAGE / max(ROWS_T, COLS_T);   // k a step: each operand's stage holds STAGE floats
override STEP_SUMS: bool = false;   // the f16 variant: sum a step in half, then add it in f32
override EXPERTS: u32 = 0u;     // slots a row (see the top); 0: one matrix
override X_SLOT: bool = false;

const WG: u32 = 256u;       // threads a workgroup
const STAGE: u32 = 2048u;   // floats of each operand staged at a time: 16 KiB in all

var<workgroup> xs: array<vec4<half>, STAGE / 4u>;  // [k][row / 4]: 4 rows a vec4
var<workgroup> ws: array<vec4<half>, STAGE / 4u>;  // [k][output / 4]
var<private> e0: u32;   // EXPERTS: where the expert's entries start in `res`

// Tile row r's entry: r, or with EXPERTS the expert's r-th (row, slot).
fn entry(r: u32) -> u32 {
    if (EXPERTS > 0u) {
        return u32(res[e0 + r]);
    }
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let j0 = wid.x * COLS_T;
    let r0 = wid.y * ROWS_T;
    var m = p.m;
    var wb = p.w0;
    if (EXPERTS > 0u) {
        let start = u32(res[wid.z]);
        m = u32(res[wid.z + 1u]) - start;
        e0 = nwg.z + 1u + start;
        wb += wid.z * p.n * p.row_bytes;
        // a tile past the expert's entries returns, as one: whether it does goes through workgroup memory (the
        // first staged vec4, before any staging: WebGPU's 16 KiB hold no other variable) to be uniform
        if (lid == 0u) {
            xs[0].x = select(half(0.0), half(1.0), r0 < m);
        }
        if (workgroupUniformLoad(&xs[0]).x == half(0.0)) {
            return;
        }
        workgroupBarrier();   // every thread has read it before the staging overwrites it
    }
    let tx = lid % TX;
    let ty = lid / TX;
    let kg = p.k / 4u;
    let gpb = QK / 4u;
    let kq = TK / 4u;   // groups of 4 k a step
    // accumulators as separate variables: an array indexed in a loop can end up in slow per-thread
    // memory when the loop is not unrolled. acc<a><i>_<b>: row 4 ty + 4 TY a + i, outputs 4 tx + 4 TX b.
    var acc00_0 = vec4<f32>(0.0); var acc01_0 = vec4<f32>(0.0); var acc02_0 = vec4<f32>(0.0); var acc03_0 = vec4<f32>(0.0);
    var acc10_0 = vec4<f32>(0.0); var acc11_0 = vec4<f32>(0.0); var acc12_0 = vec4<f32>(0.0); var acc13_0 = vec4<f32>(0.0);
    var acc00_1 = vec4<f32>(0.0); var acc01_1 = vec4<f32>(0.0); var acc02_1 = vec4<f32>(0.0); var acc03_1 = vec4<f32>(0.0);
    var acc10_1 = vec4<f32>(0.0); var acc11_1 = vec4<f32>(0.0); var acc12_1 = vec4<f32>(0.0); var acc13_1 = vec4<f32>(0.0);
    // sums of products, p<a><i>_<b> for acc<a><i>_<b>: with STEP_SUMS (the f16 variant) a step's, added to
    // the f32 accumulators after each step; else the whole sum (f32; acc stays zero and folds away)
    var p00_0 = vec4<half>(0.0); var p01_0 = vec4<half>(0.0); var p02_0 = vec4<half>(0.0); var p03_0 = vec4<half>(0.0);
    var p00_1 = vec4<half>(0.0); var p01_1 = vec4<half>(0.0); var p02_1 = vec4<half>(0.0); var p03_1 = vec4<half>(0.0);
    var p10_0 = vec4<half>(0.0); var p11_0 = vec4<half>(0.0); var p12_0 = vec4<half>(0.0); var p13_0 = vec4<half>(0.0);
    var p10_1 = vec4<half>(0.0); var p11_1 = vec4<half>(0.0); var p12_1 = vec4<half>(0.0); var p13_1 = vec4<half>(0.0);
    // the slice of k this workgroup sums: whole steps, so no step straddles two slices
    let slices = select(nwg.z, 1u, EXPERTS > 0u);
    let ks = (p.k + slices * TK - 1u) / (slices * TK) * TK;
    let kb = select(0u, wid.z * ks, EXPERTS == 0u);
    let ke = min(p.k, kb + ks);
    for (var k0 = kb; k0 < ke; k0 += TK) {
        // stage: ROWS_T rows of X and COLS_T rows of W, kq groups of 4 k each, in one loop so a thread's
        // loads of both are in flight together
        for (var e = lid; e < max(ROWS_T, COLS_T) * kq; e += WG) {
            let row = e / kq;
            let q = e % kq;
            let G = k0 / 4u + q;
            if (row < ROWS_T) {
                var xv = vec4<f32>(0.0);
                if (r0 + row < m && G < kg) {
                    let xr = entry(r0 + row);
                    xv = x[select(xr, xr / max(EXPERTS, 1u), EXPERTS > 0u && !X_SLOT) * kg + G];
                }
                for (var c = 0u; c < 4u; c++) {
                    xs[(4u * q + c) * (ROWS_T / 4u) + row / 4u][row % 4u] = half(xv[c]);
                }
            }
            if (row < COLS_T) {
                var wv = vec4<f32>(0.0);
                if (j0 + row < p.n && G < kg) {
                    wv = deq4(wb + (j0 + row) * p.row_bytes + (G / gpb) * QB, G % gpb);
                }
                for (var c = 0u; c < 4u; c++) {
                    ws[(4u * q + c) * (COLS_T / 4u) + row / 4u][row % 4u] = half(wv[c]);
                }
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = xs[kk * (ROWS_T / 4u) + ty];
            let b0 = ws[kk * (COLS_T / 4u) + tx];
            var b1 = b0;   // the second column block's operand, read once for both row blocks
            p00_0 += a0.x * b0;
            p01_0 += a0.y * b0;
            p02_0 += a0.z * b0;
            p03_0 += a0.w * b0;
            if (TC > 4u) {
                b1 = ws[kk * (COLS_T / 4u) + TX + tx];
                p00_1 += a0.x * b1;
                p01_1 += a0.y * b1;
                p02_1 += a0.z * b1;
                p03_1 += a0.w * b1;
            }
            if (TR > 4u) {
                let a1 = xs[kk * (ROWS_T / 4u) + TY + ty];
                p10_0 += a1.x * b0;
                p11_0 += a1.y * b0;
                p12_0 += a1.z * b0;
                p13_0 += a1.w * b0;
                if (TC > 4u) {
                    p10_1 += a1.x * b1;
                    p11_1 += a1.y * b1;
                    p12_1 += a1.z * b1;
                    p13_1 += a1.w * b1;
                }
            }
        }
        if (STEP_SUMS) {
            acc00_0 += vec4<f32>(p00_0); acc01_0 += vec4<f32>(p01_0); acc02_0 += vec4<f32>(p02_0); acc03_0 += vec4<f32>(p03_0);
            acc00_1 += vec4<f32>(p00_1); acc01_1 += vec4<f32>(p01_1); acc02_1 += vec4<f32>(p02_1); acc03_1 += vec4<f32>(p03_1);
            acc10_0 += vec4<f32>(p10_0); acc11_0 += vec4<f32>(p11_0); acc12_0 += vec4<f32>(p12_0); acc13_0 += vec4<f32>(p13_0);
            acc10_1 += vec4<f32>(p10_1); acc11_1 += vec4<f32>(p11_1); acc12_1 += vec4<f32>(p12_1); acc13_1 += vec4<f32>(p13_1);
            p00_0 = vec4<half>(0.0); p01_0 = vec4<half>(0.0); p02_0 = vec4<half>(0.0); p03_0 = vec4<half>(0.0);
            p00_1 = vec4<half>(0.0); p01_1 = vec4<half>(0.0); p02_1 = vec4<half>(0.0); p03_1 = vec4<half>(0.0);
            p10_0 = vec4<half>(0.0); p11_0 = vec4<half>(0.0); p12_0 = vec4<half>(0.0); p13_0 = vec4<half>(0.0);
            p10_1 = vec4<half>(0.0); p11_1 = vec4<half>(0.0); p12_1 = vec4<half>(0.0); p13_1 = vec4<half>(0.0);
        }
        workgroupBarrier();
    }
    var acc = array<vec4<f32>, 16>(
        acc00_0 + vec4<f32>(p00_0), acc01_0 + vec4<f32>(p01_0), acc02_0 + vec4<f32>(p02_0), acc03_0 + vec4<f32>(p03_0),
        acc10_0 + vec4<f32>(p10_0), acc11_0 + vec4<f32>(p11_0), acc12_0 + vec4<f32>(p12_0), acc13_0 + vec4<f32>(p13_0),
        acc00_1 + vec4<f32>(p00_1), acc01_1 + vec4<f32>(p01_1), acc02_1 + vec4<f32>(p02_1), acc03_1 + vec4<f32>(p03_1),
        acc10_1 + vec4<f32>(p10_1), acc11_1 + vec4<f32>(p11_1), acc12_1 + vec4<f32>(p12_1), acc13_1 + vec4<f32>(p13_1));
    for (var b = 0u; b < TC / 4u; b++) {
        for (var a = 0u; a < TR / 4u; a++) {
            for (var i = 0u; i < 4u; i++) {
                let r = r0 + 4u * ty + 4u * TY * a + i;
                let v4 = acc[8u * b + 4u * a + i];
                for (var c = 0u; c < 4u; c++) {
                    let j = j0 + 4u * tx + 4u * TX * b + c;
                    if (r < m && j < p.n) {
                        let at = (select(0u, wid.z * m, EXPERTS == 0u) + entry(r)) * p.y_stride + p.o0 + j;
                        var v = v4[c];
                        if (RES) {
                            v += res[at];
                        }
                        y[at] = v;
                    }
                }
            }
        }
    }
}
