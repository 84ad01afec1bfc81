// Few-row matmul (batched decode, 2 .. MAX_XR rows of X) on GPUs: Y[r, o0 + j] = sum_k X[r, k] * W[j, k]
// (+ R[r, o0 + j] with RES) for the XR rows r of X and the part's rows j < n. Each weight is read (and
// decoded through deq4) once for all XR rows: decode is bandwidth-bound, so XR sequences cost about one.
// A group of TPR threads computes one output j, thread t taking groups of 4 weights t, t + TPR, ...;
// X goes through workgroup memory a chunk of k at a time (all XR rows of it), each thread keeps XR sums,
// and a tree in workgroup memory sums each output's TPR partial sums at the end.
// Q8: each row's blocks of 32 staged values go through their 8-bit round trip (reference.q8_round_trip).
// Dispatch: ceil(n / (WG / TPR)) workgroups, spilling into y past 65535.

struct P {
    k: u32,          // weights per row; a multiple of 4 (of 32 with Q8)
    n: u32,
    row_bytes: u32,
    o0: u32,
    y_stride: u32,   // floats per row of Y
    w0: u32,         // byte offset of the part's first row in the weight buffer
}

@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // [XR, k]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [XR, y_stride]
@group(0) @binding(3) var<storage, read> res: array<f32>;       // [XR, y_stride]: added with RES
@group(0) @binding(4) var<uniform> p: P;

override XR: u32 = 4u;     // rows of X: 1 .. MAX_XR
override TPR: u32 = 4u;    // threads an output: a power of two, at most WG
override RES: bool = false;
override Q8: bool = false;

const MAX_XR: u32 = 16u;   // read by the host (plan.FEW_ROWS)
const WG: u32 = 256u;
const STAGE: u32 = 1024u;  // vec4s of workgroup memory (16 KiB): X's chunk, then the partial sums
override CG: u32 = (STAGE / XR) / 8u * 8u;   // groups of 4 of a row a chunk: whole blocks of 32 (Q8)

var<workgroup> sh: array<vec4<f32>, STAGE>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = lid % TPR;
    let j = flat_wg(wid, nwg) * (WG / TPR) + lid / TPR;
    let kg = p.k / 4u;
    let gpb = QK / 4u;
    let row = p.w0 + min(j, p.n - 1u) * p.row_bytes;   // outputs past n read the last row (never stored)
    var acc: array<f32, MAX_XR>;
    for (var g0 = 0u; g0 < kg; g0 += CG) {
        let ng = min(CG, kg - g0);
        workgroupBarrier();   // every thread is done with the previous chunk
        if (Q8) {
            for (var e = lid; e < XR * (CG / 8u); e += WG) {
                let r = e / (CG / 8u);
                let b = 8u * (e % (CG / 8u));
                var amax = 0.0;
                for (var i = 0u; i < 8u; i++) {
                    var v = vec4<f32>(0.0);
                    if (b + i < ng) {
                        v = x[r * kg + g0 + b + i];
                    }
                    sh[r * CG + b + i] = v;
                    let a = abs(v);
                    amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));
                }
                let d = amax / 127.0;
                let id = select(0.0, 1.0 / d, d > 0.0);
                for (var i = 0u; i < 8u; i++) {
                    sh[r * CG + b + i] = round(sh[r * CG + b + i] * id) * d;
                }
            }
        } else {
            for (var e = lid; e < XR * CG; e += WG) {
                let r = e / CG;
                let q = e % CG;
                var v = vec4<f32>(0.0);
                if (q < ng) {
                    v = x[r * kg + g0 + q];
                }
                sh[e] = v;
            }
        }
        workgroupBarrier();
        for (var q = t; q < ng; q += TPR) {
            let G = g0 + q;
            let w = deq4(row + (G / gpb) * QB, G % gpb);
            for (var r = 0u; r < XR; r++) {
                acc[r] += dot(w, sh[r * CG + q]);
            }
        }
    }
    // each thread's XR sums, 4 a vec4, in slots of WG; then a tree over each output's TPR threads
    let nq = (XR + 3u) / 4u;
    workgroupBarrier();
    for (var i = 0u; i < nq; i++) {
        sh[i * WG + lid] = vec4<f32>(acc[4u * i], acc[4u * i + 1u], acc[4u * i + 2u], acc[4u * i + 3u]);
    }
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            for (var i = 0u; i < nq; i++) {
                sh[i * WG + lid] += sh[i * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (j < p.n) {
        let l0 = lid - t;
        for (var r = t; r < XR; r += TPR) {
            var v = sh[(r / 4u) * WG + l0][r % 4u];
            let at = r * p.y_stride + p.o0 + j;
            if (RES) {
                v += res[at];
            }
            y[at] = v;
        }
    }
}
