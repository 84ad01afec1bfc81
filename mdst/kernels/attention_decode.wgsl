// One-row (decode) attention on GPUs, split over workgroups (flash-decoding). Row r sits at position
// pos = pos0 + r and attends to positions [pos - window + 1, pos] (window 0: [0, pos]), read from slot
// position % ring through kv/<format>.wgsl. Workgroup (head group, row, z) computes GW query heads of one KV
// head (each cached row read once for them) over the z-th range of those keys: the nwg.z ranges share the
// keys, at least SPLIT each (reference.split_keys).
// The workgroup is KG = WG / LPK key groups of LPK lanes. A key group takes whole keys, U an iteration, and
// keeps its own online softmax: lane `lane` holds the query's and the output's fours lane, lane + LPK, ...
// (F of them, in registers), so the group's lanes read a key's K and V rows side by side, K and V loaded
// together (one wait on memory an iteration). The one exchange in the loop is the keys' scores: each lane's
// part of a dot product goes through workgroup memory (two buffers taken in turn, so one barrier an
// iteration) and every lane of the group sums the LPK parts. After the loop the key groups' (max, sum,
// output) are merged once.
// One range (nwg.z = 1) writes the normalized output; several write each head's partial (max, sum,
// unnormalized output; head_dim + 2 floats) for attention_merge. Row r reads and writes activation row
// row0 + r (STEP_ROW0); its partials are indexed by r.
// Dispatch: (heads / GW, rows, splits).

struct P {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // a multiple of 4, at most 4 * F * LPK
    ring: u32,
    window: u32,
    scale: f32,
    softcap: f32,    // 0: none; else scores become softcap * tanh(score / softcap)
    temp_scale: f32, // attention temperature (0: none): queries at position p are scaled by
    temp_floor: u32, //   1 + temp_scale * log(1 + floor(p / temp_floor))
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;          // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // [rows, heads * head_dim] or partials
@group(0) @binding(5) var<uniform> p: P;

override WG: u32 = 128u;
override SPLIT: u32 = 32u;  // least keys a range
override LPK: u32 = 8u;     // lanes a key: a power of two dividing WG
override F: u32 = 4u;       // fours of a head a lane holds: ceil(head_dim / 4 / LPK)
override GW: u32 = 1u;      // query heads a workgroup: divides heads / kv_heads; GW * F <= HELD
override U: u32 = 1u;       // keys a key group takes an iteration, at most MAX_U: more in flight a barrier
override KG: u32 = WG / LPK;

// Limits read by the host (plan.decode_attention): registers a lane holds, workgroup memory.
const HELD: u32 = 16u;      // fours of queries (and as many of outputs) a lane holds: GW * F
const MAX_GW: u32 = 8u;
const MAX_U: u32 = 4u;
const MERGE: u32 = 256u;    // fours of the key groups' outputs merged at a time

var<workgroup> red: array<f32, 2u * U * GW * WG>;   // lanes' partial scores [buffer, key, head, lane]; then
                                                    // the groups' (max, sum)
var<workgroup> mb: array<vec4<f32>, MERGE>;     // [key group, four] a chunk of the key groups' outputs

fn put4(i: u32, v: vec4<f32>) {
    out[i] = v.x;
    out[i + 1u] = v.y;
    out[i + 2u] = v.z;
    out[i + 3u] = v.w;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.y;
    if (r >= step[STEP_ROWS]) {
        return;
    }
    let pos = step[STEP_POS0] + r;
    var first = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        first = pos + 1u - p.window;
    }
    // this range's keys [first, first + n); a cache allocated long but filled short still spreads its keys
    // over every range
    let len = max(SPLIT, (pos + 1u - first + nwg.z - 1u) / nwg.z);
    first += wid.z * len;
    var n = 0u;
    if (first <= pos) {
        n = min(len, pos + 1u - first);
    }
    let h0 = wid.x * GW;
    let kb = (h0 / (p.heads / p.kv_heads)) * p.head_dim;   // the KV head's first value in a cached row
    let kv_dim = p.kv_heads * p.head_dim;
    let dv = p.head_dim / 4u;
    let lane = lid % LPK;
    let kg = lid / LPK;
    let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));

    var qr: array<vec4<f32>, HELD>;    // [head, j]: four lane + LPK * j of the head's query, scaled
    var acc: array<vec4<f32>, HELD>;   // the same fours of the output
    var m: array<f32, MAX_GW>;         // running max of the group's scores
    var l: array<f32, MAX_GW>;         // sum of exp(score - m)
    for (var g = 0u; g < GW; g++) {
        m[g] = -3.0e38;
        l[g] = 0.0;
        for (var j = 0u; j < F; j++) {
            let i = lane + LPK * j;
            acc[g * F + j] = vec4<f32>(0.0);
            qr[g * F + j] = vec4<f32>(0.0);
            if (i < dv) {
                let qb = ((step[STEP_ROW0] + r) * p.heads + h0 + g) * p.head_dim + 4u * i;
                qr[g * F + j] = vec4<f32>(q[qb], q[qb + 1u], q[qb + 2u], q[qb + 3u]) * qscale;
            }
        }
    }

    var s: array<f32, MAX_U * MAX_GW>;       // [key, head]
    var vr: array<vec4<f32>, MAX_U * HELD>;  // [key, j]: the keys' V fours (zero past the head: adds nothing)
    let iters = (n + U * KG - 1u) / (U * KG);   // the same for every lane: the loop holds a barrier
    for (var it = 0u; it < iters; it++) {
        let buf = (it % 2u) * U * GW * WG;
        for (var e = 0u; e < U; e++) {
            let t = (it * U + e) * KG + kg;
            let row = (first + t) % p.ring;
            for (var g = 0u; g < GW; g++) {
                s[e * GW + g] = 0.0;   // assigned, not declared here: a declaration in a loop may be zeroed once only
            }
            if (t < n) {
                for (var j = 0u; j < F; j++) {
                    let i = lane + LPK * j;
                    if (i < dv) {
                        let k = k_get4(row, kb + 4u * i, kv_dim);
                        vr[e * F + j] = v_get4(row, kb + 4u * i, kv_dim);
                        for (var g = 0u; g < GW; g++) {
                            s[e * GW + g] += dot(qr[g * F + j], k);
                        }
                    }
                }
            }
            for (var g = 0u; g < GW; g++) {
                red[buf + (e * GW + g) * WG + lid] = s[e * GW + g];
            }
        }
        workgroupBarrier();   // the other buffer's readers are past it: they wrote this iteration first
        for (var e = 0u; e < U; e++) {
            if ((it * U + e) * KG + kg < n) {
                var a: array<f32, MAX_GW>;   // the factor the group's old sums take
                var w: array<f32, MAX_GW>;   // the key's weight
                for (var g = 0u; g < GW; g++) {
                    var sc = 0.0;
                    for (var u = 0u; u < LPK; u++) {
                        sc += red[buf + (e * GW + g) * WG + kg * LPK + u];
                    }
                    sc = softcapped(sc, p.softcap);
                    let mn = max(m[g], sc);
                    a[g] = exp(m[g] - mn);
                    w[g] = exp(sc - mn);
                    l[g] = l[g] * a[g] + w[g];
                    m[g] = mn;
                }
                for (var j = 0u; j < F; j++) {
                    for (var g = 0u; g < GW; g++) {
                        acc[g * F + j] = acc[g * F + j] * a[g] + w[g] * vr[e * F + j];
                    }
                }
            }
        }
    }

    // Merge the key groups: each head's max M over them, each group's output scaled by exp(m - M) and summed.
    workgroupBarrier();   // red's last scores are read
    if (lane == 0u) {
        for (var g = 0u; g < GW; g++) {
            red[2u * (g * KG + kg)] = m[g];
            red[2u * (g * KG + kg) + 1u] = l[g];
        }
    }
    workgroupBarrier();
    let chunk = MERGE / KG;   // fours of a head merged at a time
    for (var g = 0u; g < GW; g++) {
        var big = -3.0e38;
        for (var k = 0u; k < KG; k++) {
            big = max(big, red[2u * (g * KG + k)]);
        }
        var sum = 0.0;
        for (var k = 0u; k < KG; k++) {
            sum += red[2u * (g * KG + k) + 1u] * exp(red[2u * (g * KG + k)] - big);
        }
        let mine = exp(m[g] - big);
        let h = h0 + g;
        let pb = ((r * p.heads + h) * nwg.z + wid.z) * (p.head_dim + 2u);   // this range's partial
        if (nwg.z > 1u && lid == 0u) {
            out[pb] = big;   // an empty range (past pos) has sum 0
            out[pb + 1u] = sum;
        }
        for (var c0 = 0u; c0 < dv; c0 += chunk) {
            for (var j = 0u; j < F; j++) {
                let i = lane + LPK * j;
                if (i >= c0 && i < min(dv, c0 + chunk)) {
                    mb[kg * chunk + i - c0] = acc[g * F + j] * mine;
                }
            }
            workgroupBarrier();
            for (var c = lid; c < min(chunk, dv - c0); c += WG) {
                var o = vec4<f32>(0.0);
                for (var k = 0u; k < KG; k++) {
                    o += mb[k * chunk + c];
                }
                if (nwg.z > 1u) {
                    put4(pb + 2u + 4u * (c0 + c), o);
                } else {
                    put4(((step[STEP_ROW0] + r) * p.heads + h) * p.head_dim + 4u * (c0 + c), o / sum);
                }
            }
            workgroupBarrier();
        }
    }
}
