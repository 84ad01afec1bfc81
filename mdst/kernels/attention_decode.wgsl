// Decode attention where the adapter has subgroups: attention.wgsl's SPLIT form (one row's keys cut into
// ranges, a workgroup z each, partials for attention_merge) without its three workgroup barriers a tile.
// A workgroup takes GW query heads of one KV head. Its lanes go in NG groups of LPK; a group takes U keys at
// a time, reading their K and V rows together, and keeps its own online softmax. Lane i of a group holds the
// head's fours i, i + LPK, ... (D4 of them) of the query and of the running output, so a score is its
// partial dot summed over the group by subgroup shuffles, and the keys go through registers alone. The NG
// groups' states meet once, at the end, through workgroup memory.
// LPK is at most the adapter's least subgroup size and a group's lanes are consecutive local indices (as in
// a 1-D workgroup's subgroups on the adapters we run), so a group's shuffles stay inside its subgroup.
// Dispatch: (heads / GW, rows, splits); partials as attention.wgsl's.

enable subgroups;

struct P {
    heads: u32,
    kv_heads: u32,
    head_dim: u32,   // 4 * LPK * D4
    ring: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    temp_scale: f32,
    temp_floor: u32,
}

@group(0) @binding(0) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;           // [rows, heads * head_dim]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // [rows, heads, splits, head_dim + 2]
@group(0) @binding(5) var<uniform> p: P;

override LPK: u32 = 32u;     // lanes a key: a power of two, at most 32 (the size of so)
override GW: u32 = 1u;       // query heads a workgroup: GW * D4 <= MAX_QD
override D4: u32 = 1u;       // fours of a head a lane holds
override U: u32 = 4u;        // keys a group reads together: U * D4 <= MAX_QD
override SPLIT: u32 = 32u;   // least keys a split (reference.split_keys)
override WG: u32 = NG * LPK;

const NG: u32 = 4u;          // lane groups a workgroup
const MAX_QD: u32 = 8u;      // a lane's fours of queries and of outputs, and of K or V rows in flight (host)
const MAX_GW: u32 = 8u;

var<workgroup> so: array<vec4<f32>, (NG - 1u) * MAX_QD * 32u>;   // groups 1..: [NG - 1, GW * D4, LPK]
var<workgroup> sm: array<vec2<f32>, NG * MAX_GW>;                 // [NG, GW] (running max, sum)

fn put4(i: u32, v: vec4<f32>) {
    out[i] = v.x;
    out[i + 1u] = v.y;
    out[i + 2u] = v.z;
    out[i + 3u] = v.w;
}

// A value summed over the LPK lanes of a group.
fn group_sum(v: vec4<f32>) -> vec4<f32> {
    var s = v;
    for (var m = 1u; m < LPK; m <<= 1u) {
        s += subgroupShuffleXor(s, m);
    }
    return s;
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
    let len = max(SPLIT, (pos + 1u - first + nwg.z - 1u) / nwg.z);
    first += wid.z * len;
    let last = min(pos, first + len - 1u);   // keys [first, last]; none past pos
    let h0 = wid.x * GW;
    let kb = (h0 / (p.heads / p.kv_heads)) * p.head_dim;
    let kv_dim = p.kv_heads * p.head_dim;
    let lane = lid % LPK;
    let grp = lid / LPK;
    let qscale = p.scale * (1.0 + p.temp_scale * log(floor(f32(pos) / f32(p.temp_floor)) + 1.0));

    var qv: array<vec4<f32>, MAX_QD>;    // [GW, D4]
    var acc: array<vec4<f32>, MAX_QD>;   // [GW, D4]
    var m: array<f32, MAX_GW>;
    var l: array<f32, MAX_GW>;
    for (var g = 0u; g < GW; g++) {
        for (var j = 0u; j < D4; j++) {
            let qb = ((step[STEP_ROW0] + r) * p.heads + h0 + g) * p.head_dim + 4u * (lane + LPK * j);
            qv[g * D4 + j] = vec4<f32>(q[qb], q[qb + 1u], q[qb + 2u], q[qb + 3u]) * qscale;
            acc[g * D4 + j] = vec4<f32>(0.0);
        }
        m[g] = -3.0e38;
        l[g] = 0.0;
    }

    var kr: array<vec4<f32>, MAX_QD>;   // [U, D4]
    var vr: array<vec4<f32>, MAX_QD>;
    var sc: array<vec4<f32>, 2u * MAX_QD>;   // [U, 2]: key u's scores for heads 0-3 and 4-7
    for (var t0 = first; t0 <= last; t0 += NG * U) {
        let k0 = t0 + grp * U;   // this group's keys k0 .. k0 + U - 1; past `last` they read `last`, weigh 0
        for (var u = 0u; u < U; u++) {
            let row = min(k0 + u, last) % p.ring;
            for (var j = 0u; j < D4; j++) {
                kr[u * D4 + j] = k_get4(row, kb + 4u * (lane + LPK * j), kv_dim);
                vr[u * D4 + j] = v_get4(row, kb + 4u * (lane + LPK * j), kv_dim);
            }
        }
        for (var u = 0u; u < U; u++) {
            var s = array<f32, MAX_GW>();
            for (var g = 0u; g < GW; g++) {
                for (var j = 0u; j < D4; j++) {
                    s[g] += dot(qv[g * D4 + j], kr[u * D4 + j]);
                }
            }
            sc[2u * u] = group_sum(vec4<f32>(s[0], s[1], s[2], s[3]));
            if (GW > 4u) {
                sc[2u * u + 1u] = group_sum(vec4<f32>(s[4], s[5], s[6], s[7]));
            }
        }
        for (var g = 0u; g < GW; g++) {
            var mx = m[g];
            for (var u = 0u; u < U; u++) {
                let s = softcapped(sc[2u * u + g / 4u][g % 4u], p.softcap);
                sc[2u * u + g / 4u][g % 4u] = s;
                if (k0 + u <= last) {
                    mx = max(mx, s);
                }
            }
            let al = exp(m[g] - mx);
            m[g] = mx;
            l[g] *= al;
            for (var j = 0u; j < D4; j++) {
                acc[g * D4 + j] *= al;
            }
            for (var u = 0u; u < U; u++) {
                let w = select(0.0, exp(sc[2u * u + g / 4u][g % 4u] - mx), k0 + u <= last);
                l[g] += w;
                for (var j = 0u; j < D4; j++) {
                    acc[g * D4 + j] += w * vr[u * D4 + j];
                }
            }
        }
    }

    // Groups 1.. hand their states to group 0, which rescales them to the split's max and writes the partial.
    if (grp > 0u) {
        for (var g = 0u; g < GW; g++) {
            sm[grp * GW + g] = vec2<f32>(m[g], l[g]);
            for (var j = 0u; j < D4; j++) {
                so[(((grp - 1u) * GW + g) * D4 + j) * LPK + lane] = acc[g * D4 + j];
            }
        }
    }
    workgroupBarrier();
    if (grp == 0u) {
        for (var g = 0u; g < GW; g++) {
            var big = m[g];
            for (var o = 1u; o < NG; o++) {
                big = max(big, sm[o * GW + g].x);
            }
            let a0 = exp(m[g] - big);
            var total = l[g] * a0;
            for (var o = 1u; o < NG; o++) {
                total += sm[o * GW + g].y * exp(sm[o * GW + g].x - big);
            }
            let pb = ((r * p.heads + h0 + g) * nwg.z + wid.z) * (p.head_dim + 2u);
            if (lane == 0u) {
                out[pb] = big;
                out[pb + 1u] = total;
            }
            for (var j = 0u; j < D4; j++) {
                var o4 = acc[g * D4 + j] * a0;
                for (var o = 1u; o < NG; o++) {
                    o4 += so[(((o - 1u) * GW + g) * D4 + j) * LPK + lane] * exp(sm[o * GW + g].x - big);
                }
                put4(pb + 2u + 4u * (lane + LPK * j), o4);
            }
        }
    }
}
